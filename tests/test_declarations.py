"""Method declarations (``edgetune.methods.configs``): read without torch, one name per meaning, the old
spellings accepted for one release, and the trainers reading them as they are."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from edgetune.cli import build_parser
from edgetune.methods import METHODS, LoRA, ParamError, PromptTuning, load
from edgetune.methods.configs import declared
from edgetune.methods.core.config import GradientConfig, ProjectedConfig, SoftPromptConfig

#: deprecated spelling -> today's name, per method (one release of grace)
RENAMED = {"lora": {"alpha": "lora_alpha"}, "dept": {"alpha": "offset_scale"}, "bbt": {"alpha": "projection_scale"},
           "bbtv2": {"alpha": "projection_scale"}, "pt": {"lr": "lr_prompt"}, "lamp": {"lr": "lr_prompt"}}


def test_declarations_import_no_torch_and_are_quick():
    code = ("import sys, time; t = time.perf_counter(); from edgetune.methods.configs import declared; "
            "n = len(declared()); print(n, round(time.perf_counter() - t, 3), "
            "sorted(m for m in ('torch', 'numpy', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == len(METHODS) and out[2:] == ["[]"]


def test_one_name_per_meaning():
    """The soft prompt's rate is ``lr_prompt`` wherever there is one; BBT's projection scale, DePT's offset scale
    and LoRA's alpha have their own names; ``lr`` is only ever a method's single (whole-model or decoder) rate."""
    for name, config in declared().items():
        params = config.param_names()
        assert "alpha" not in params, name
        if issubclass(config, SoftPromptConfig):
            assert "lr_prompt" in params and "lr" not in params, name
        if issubclass(config, ProjectedConfig):
            assert "projection_scale" in params, name
    assert "lora_alpha" in declared()["lora"].param_names() and "offset_scale" in declared()["dept"].param_names()
    for name, renamed in RENAMED.items():
        assert declared()[name].aliases == renamed, name


@pytest.mark.parametrize("name", sorted(RENAMED))
def test_an_old_spelling_still_works_with_a_warning(name):
    cls = METHODS[name]
    ((old, new),) = RENAMED[name].items()
    value = 0.25
    with pytest.warns(FutureWarning, match=f"'{old}' is renamed '{new}'"):
        m = cls(**{old: value})
    assert m.get_params()[new] == value and old not in m.get_params()
    with pytest.warns(FutureWarning, match=f"'{old}' is renamed '{new}'"):
        m.set_params(**{old: 0.5})
    assert getattr(m, new) == 0.5
    with pytest.raises(ParamError, match=f"give only '{new}'"):
        cls.validate_params({old: 1.0, new: 1.0})
    with pytest.warns(FutureWarning, match=f"--{old} is renamed --{new.replace('_', '-')}"):
        args = build_parser().parse_args(["run", name, f"--{old}", "0.5"])
    assert getattr(args, f"m_{new}") == 0.5


def test_a_bench_entry_with_an_old_spelling_is_renamed():
    from edgetune.bench.config import MethodEntry

    with pytest.warns(FutureWarning, match="bench entry 'bbt'"):
        entry = MethodEntry.parse({"name": "bbt", "params": {"alpha": 2.0, "budget": 40}})
    assert entry.params == {"projection_scale": 2.0, "budget": 40}


def test_records_written_under_an_old_spelling_are_the_same_cell():
    """Resume compares a recorded cell's settings after renaming, so a run recorded with ``lr`` is not redone
    (nor refused) when the config now says ``lr_prompt``."""
    from edgetune.bench.config import BenchConfig, MethodEntry
    from edgetune.bench.runner import _same_spec

    entry = MethodEntry("pt", "pt", {"lr_prompt": 0.3, "steps": 60})
    config = BenchConfig(name="x", tasks=["sst2"], methods=[entry], models=["m"], shots=[16], seeds=[0], test_size=100)
    cell = ("m", "sst2", 16, 0, entry)
    old = {"spec": {"name": "pt", "params": {"lr": 0.3, "steps": 60}, "test_size": 100}}
    assert _same_spec(config, cell, old)
    assert not _same_spec(config, cell, {"spec": {"name": "pt", "params": {"lr": 0.1, "steps": 60}, "test_size": 100}})


def test_a_model_saved_under_an_old_spelling_loads_quietly(make_backend, toy_task, tmp_path):
    be = make_backend("causal")
    m = PromptTuning(be, steps=1, batch_size=4, eval_every=1, prompt_tokens=4, lr_prompt=0.05,
                     progress=False).fit(toy_task.sample(4, seed=0))
    path = m.save(tmp_path / "pt")
    config = json.loads((path / "config.json").read_text())
    config["params"]["lr"] = config["params"].pop("lr_prompt")  # as the previous release wrote it
    (path / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a user cannot act on a warning about a file they did not write
        again = load(path, model=be)
    assert again.lr_prompt == 0.05
    np.testing.assert_allclose(again.class_scores(["fine"]), m.class_scores(["fine"]), atol=1e-6)


def test_the_trainers_read_the_declaration_itself():
    """No trainer re-declares a method parameter: AdamW reads the gradient config, CMA-ES the black-box one."""
    from edgetune.methods.core.config import BlackBoxConfig
    from edgetune.methods.core.trainers import AdamWTrainer, CMAESTrainer

    assert not {f.name for f in dataclasses.fields(AdamWTrainer)} & set(GradientConfig.param_names())
    assert not {f.name for f in dataclasses.fields(CMAESTrainer)} & set(BlackBoxConfig.param_names())


def test_on_check_sees_every_dev_check(make_backend, toy_task):
    """The trainer's callback: called at each dev check with that check's scores, the weights in place."""
    seen = []
    m = LoRA(make_backend("causal"), steps=4, eval_every=2, batch_size=4, budget_tokens=8, progress=False)
    m.on_check = lambda step, info: seen.append((step, info["dev_accuracy"], m.module_ is not None))
    m.fit(toy_task.sample(4, seed=0))
    assert [s for s, _, _ in seen] == [s for s, _ in m.history_["dev_accuracy"]] == [0, 2, 4]
    assert [a for _, a, _ in seen] == [a for _, a in m.history_["dev_accuracy"]]


def test_the_factor_rule_keeps_the_step_it_was_measured_with_when_the_prompt_ratio_moves():
    """The soft-prompt family's "auto" ratio (PROMPT_LR_RATIO) and ACCEPT's / LAMP's factor step (FACTOR_LR_RATIO) are
    separate defaults: moving one (session 25: 0.3 → 0.1 for prompt tuning, ADePT, DePT) leaves the other alone."""
    from edgetune.methods.core.config import FACTOR_LR_RATIO, PROMPT_LR_RATIO

    configs = declared()
    for name in ("pt", "adept", "dept"):
        assert configs[name]().prompt_lr_ratio == PROMPT_LR_RATIO
    for name in ("accept", "lamp"):
        assert configs[name]().prompt_lr_ratio == FACTOR_LR_RATIO
    assert PROMPT_LR_RATIO != FACTOR_LR_RATIO
    assert configs["accept"](prompt_lr_ratio=0.1).prompt_lr_ratio == 0.1  # still a parameter
