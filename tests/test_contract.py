"""The contract every registered method keeps (in the spirit of scikit-learn's ``check_estimator``), and the
backend contract that makes DecT and the input-edge methods score a prompt identically.

The method list comes from the registry alone: a new method module with ``@register`` is checked here with
no other edit (``test_a_new_module_is_one_registration_away`` proves it with a method defined in the test).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from edgetune.backends import EmbeddingBackend, Features, load_backend
from edgetune.bench.config import BenchConfig
from edgetune.cli import build_parser, main
from edgetune.data import Example, Template
from edgetune.errors import EdgetuneError, IncompatibleError
from edgetune.methods import METHODS, Costs, Method, load, register
from edgetune.methods.core.config import EDGES, NEEDS
from edgetune.methods.core.output_edge import OutputEdgeMethod

TEXTS = ["a wonderful film", "a dull , boring mess that goes on", "fine"]


@pytest.fixture(scope="module")
def encoder():
    return load_backend("minilm-l6", cache=None, progress=False)


def backends_for(cls, make_backend, encoder):
    """A backend the method runs on, and another model it must refuse."""
    if cls.needs == "encoder":
        return encoder, EmbeddingBackend(encoder.model, encoder.name, encoder._identity, scale=5.0, progress=False)
    return make_backend("causal"), make_backend("causal", seed=3)


def fitted(cls, backend, toy_task):
    params = dict(cls.smoke_params)
    if "progress" in cls.param_names():
        params["progress"] = False
    return cls(backend, **params).fit(toy_task.sample(4, seed=0))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_declarations(name):
    cls = METHODS[name]
    assert cls.name == name and cls.display_name
    assert cls.edge in EDGES and cls.needs in NEEDS
    assert all(c in METHODS for c in cls.companions)
    config = cls.config  # one declaration: the constructor, the docs and the CLI are made from it
    assert config.name == name and config.estimator == cls.__name__ and config.module() == cls.__module__
    signature = inspect.signature(cls)
    assert list(signature.parameters) == ["model", *config.param_names()]
    for pname, info in config.params().items():  # a default and one line of help each, stated in the docstring
        assert signature.parameters[pname].default == info.default and info.help and "\n" not in info.help, pname
        assert f"\n    {pname} : " in cls.__doc__, pname
    config().check()  # the defaults pass the declared checks
    m = cls()
    assert m.get_params() == {"model": None, **cls.defaults()}  # stored as given (None: the default model)
    again = cls(**m.get_params())
    assert again.get_params() == m.get_params()  # a clone is possible from get_params (scikit-learn's clone)
    with pytest.raises(EdgetuneError, match="not fitted"):
        m.predict(TEXTS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_fit_predict_save_load_refuse_and_costs(name, make_backend, encoder, toy_task, tmp_path):
    cls = METHODS[name]
    backend, other = backends_for(cls, make_backend, encoder)
    m = fitted(cls, backend, toy_task)
    assert m.labels_ == ("negative", "positive")
    preds = m.predict(TEXTS)
    assert len(preds) == 3 and set(preds) <= set(m.labels_)
    assert m.predict("one string") in (["negative"], ["positive"])
    proba = m.predict_proba(TEXTS)
    assert proba.shape == (3, 2)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    costs = m.costs()
    assert isinstance(costs, Costs) and all(isinstance(v, int) and v >= 0 for v in vars(costs).values())
    if getattr(cls, "learns_from_labels", True):
        assert costs.queries >= len(toy_task.sample(4, seed=0))
        assert (costs.trainable_params > 0) == getattr(cls, "parametric", True)
    # scikit-learn's classifier protocol, on every method
    import pandas as pd
    from sklearn.base import clone

    assert list(m.classes_) == ["negative", "positive"]
    assert m.predict(pd.Series(TEXTS)) == preds == m.predict(np.array(TEXTS))
    assert m.predict(pd.DataFrame({"text": TEXTS, "source": ["x"] * 3})) == preds  # never the column names
    assert m.score(TEXTS, preds) == 1.0
    copy = clone(m)
    assert type(copy) is cls and not hasattr(copy, "labels_") and not hasattr(copy, "classes_")
    assert copy.get_params().keys() == m.get_params().keys() and copy.model is m.model  # the model is shared
    pname = "seed" if "seed" in cls.param_names() else cls.param_names()[0]
    value = 7 if pname == "seed" else m.get_params()[pname]
    assert copy.set_params(**{pname: value}) is copy and copy.get_params()[pname] == value
    assert m.get_params()[pname] == (0 if pname == "seed" else value)  # the original is untouched
    path = m.save(tmp_path / name)
    assert not list(path.rglob("*.pkl")) and not list(path.rglob("*.bin"))  # safetensors and JSON only
    again = load(path, model=backend)
    assert type(again) is cls
    np.testing.assert_allclose(again.class_scores(TEXTS), m.class_scores(TEXTS), atol=1e-5)
    with pytest.raises(IncompatibleError):
        load(path, model=other)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_in_the_cli_and_the_bench(name):
    parser = build_parser()
    args = parser.parse_args(["run", name])
    assert args.method == name
    run_help = next(a for a in parser._subparsers._group_actions[0].choices["run"]._actions if a.dest == "method")
    assert name in run_help.choices
    cfg = BenchConfig.from_dict({"tasks": ["sst2"], "methods": [name], "seeds": [0]})
    (cell,) = cfg.cells()
    assert cell[4].name == name
    if METHODS[name].needs == "encoder":  # runs on its own encoder, not the bench's LM
        assert cell[0] == METHODS[name].default_model


def test_register_checks_declarations():
    from edgetune.methods.core.config import OutputEdgeConfig, param

    class Features_(OutputEdgeMethod):
        def fit_features(self, train, y, content_free):
            return self

        def decision_features(self, features):
            return features.scores

    @dataclass(kw_only=True)
    class NoDisplayConfig(OutputEdgeConfig):
        name: ClassVar[str] = "nodisplay"

    class NoDisplay(Features_):
        config = NoDisplayConfig

    with pytest.raises(TypeError, match="display_name"):
        register(NoDisplay)

    class NoConfig(Features_):
        name = "noconfig"
        display_name = "no config"

    with pytest.raises(TypeError, match="config"):
        register(NoConfig)

    @dataclass(kw_only=True)
    class TakenConfig(OutputEdgeConfig):
        name: ClassVar[str] = "dect"
        display_name: ClassVar[str] = "another DecT"

    class Taken(Features_):
        config = TakenConfig

    with pytest.raises(TypeError, match="taken"):
        register(Taken)

    @dataclass(kw_only=True)
    class BudgetedConfig(OutputEdgeConfig):
        name: ClassVar[str] = "budgeted"
        display_name: ClassVar[str] = "budgeted"
        budget_tokens: int = param(100, "trainable-parameter budget")

    class Budgeted(Features_):
        config = BudgetedConfig

    with pytest.raises(TypeError, match="budget_rule"):
        register(Budgeted)

    @dataclass(kw_only=True)
    class NoDefaultConfig(OutputEdgeConfig):
        name: ClassVar[str] = "nodefault"
        display_name: ClassVar[str] = "no default"
        k: int
        j: int = 3

    class NoDefault(Features_):
        config = NoDefaultConfig

    with pytest.raises(TypeError, match=r"'k' needs a default.*'j' needs one line of help"):
        register(NoDefault)
    assert not {"nodisplay", "noconfig", "budgeted", "nodefault"} & set(METHODS)


def test_a_new_module_is_one_registration_away(make_backend, toy_task, tmp_path, capsys, tiny_model_dir, toy_dir):
    """A method defined here, registered once, is fitted by the runner, named in reports and run by the CLI."""

    from edgetune.methods.core.config import OutputEdgeConfig, param, whole

    @dataclass(kw_only=True)
    class CentroidConfig(OutputEdgeConfig):
        name: ClassVar[str] = "centroid_test"
        display_name: ClassVar[str] = "centroid (test)"
        shrink: int = param(0, "an option of the test's own, shown by --help", whole(0))

    class Centroid(OutputEdgeMethod):
        """Cosine to each class's mean hidden state."""

        config = CentroidConfig

        def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> Centroid:
            h = train.hidden / np.linalg.norm(train.hidden, axis=1, keepdims=True)
            self.centroids_ = np.stack([h[y == c].mean(0) for c in range(len(self.labels_))])
            return self

        def decision_features(self, features: Features) -> np.ndarray:
            return features.hidden @ self.centroids_.T

        def state(self):
            return {"centroids": self.centroids_}

        def set_state(self, tensors):
            self.centroids_ = tensors["centroids"]

    register(Centroid)
    try:
        m = fitted(Centroid, make_backend("causal"), toy_task)
        assert m.costs().trainable_params == 2 * m.hidden_dim_
        code = main(["run", "centroid_test", "--train", str(toy_dir / "toy/train.jsonl"), "--test",
                     str(toy_dir / "toy/test.jsonl"), "--template", "{text} It was {mask}", "--label-words",
                     "negative:bad,positive:great", "--shots", "2", "--seeds", "0", "--model", str(tiny_model_dir),
                     "--no-progress", "-o", str(tmp_path / "out")])
        out = capsys.readouterr().out
        assert code == 0 and "centroid (test)" in out
        assert "centroid (test)" in (tmp_path / "out" / "report.md").read_text()
        with pytest.raises(SystemExit):
            main(["run", "centroid_test", "--help"])
        assert "an option of the test's own, shown by --help (default 0)" in " ".join(capsys.readouterr().out.split())
    finally:
        METHODS.pop("centroid_test", None)


def test_methods_ask_nothing_undeclared_of_a_backend():
    """Nothing outside backends/ touches a backend's private attributes."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "src" / "edgetune"
    offenders = []
    for path in root.rglob("*.py"):
        if "backends" in path.parts:
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"backend\w*\._(?!_)", line) and "_backend_options" not in line:
                offenders.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert not offenders, offenders


def _texts_and_prompt():
    return [Example(t) for t in TEXTS], Template("{text} In summary, it was {mask}"), ["bad", "great"]


@pytest.mark.parametrize("kind_", ["causal", "masked", "seq2seq"])
def test_dect_features_and_a_zero_offset_prompted_model_score_identically(kind_, make_backend, toy_task):
    """One forward pass: the scores DecT reads equal an input-edge model's whose offsets are zero."""
    from edgetune.methods import ADePT, DePT

    be = make_backend(kind_)
    examples, template, words = _texts_and_prompt()
    extracted = be.features(examples, template, words).scores
    for cls, extra in ((ADePT, {"prompt_tokens": 0}), (DePT, {"prompt_tokens": 1, "positions": 16})):
        m = cls(be, template=template.text, label_words={"negative": "bad", "positive": "great"}, steps=1,
                budget_tokens=8, progress=False, **extra)
        m.fit(["good", "bad"], ["positive", "negative"])
        with torch.no_grad():
            if cls is ADePT:
                m.module_.w2.weight.zero_()
                m.module_.w2.bias.zero_()
            else:
                m.module_.lora_b.zero_()
                m.module_.soft_prompt = None  # no prompt: the frozen model reads the plain prompt
        np.testing.assert_allclose(m.class_scores(TEXTS), extracted, rtol=0, atol=1e-5)


def test_a_remote_backend_declares_it_has_no_weights(make_backend, toy_task):
    from edgetune.backends import OpenAIBackend
    from edgetune.backends.base import NeedsWeightsError
    from edgetune.methods import ADePT

    remote = OpenAIBackend("fake", "http://127.0.0.1:9/v1", progress=False)
    assert not remote.provides_weights and make_backend("causal").provides_weights
    with pytest.raises(NeedsWeightsError):
        remote.collate([[1, 2]])
    with pytest.raises(NeedsWeightsError, match="in-process"):
        ADePT(remote, progress=False).fit(toy_task.sample(2, 0))


def test_method_base_is_the_only_estimator_surface():
    """predict / predict_proba are written once, on Method."""
    for cls in METHODS.values():
        for attr in ("predict", "predict_proba", "backend", "labels_from_scores"):
            owner = next(k for k in cls.__mro__ if attr in k.__dict__)
            assert owner is Method, f"{cls.__name__}.{attr} is redefined in {owner.__name__}"


def _imports(root, path):
    """(absolute module, line) of every edgetune import in ``path`` (relative imports resolved)."""
    import ast

    package = ["edgetune", *path.relative_to(root).with_suffix("").parts]
    package = package[:-1]  # a module's package (an __init__'s too: its folder)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out += [module] if node.module else [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


#: what a declaration may import (the standard library it uses): no torch, numpy or scikit-learn
TORCH_FREE = ("__future__", "dataclasses", "typing", "importlib", "pkgutil", "functools", "math", "numbers",
              "warnings", "collections", "sys")


def test_imports_follow_the_architecture():
    """ARCHITECTURE.md's import table: data <- backends <- methods <- bench <- cli; inside methods/, the framework
    (core/, configs/) never imports a method, a method module never imports another, and a declaration imports
    only the torch-free core.config. The framework/method split is read from the package itself."""
    import pathlib

    from edgetune.methods.core.registry import FRAMEWORK, is_method_module

    root = pathlib.Path(__file__).resolve().parents[1] / "src" / "edgetune"
    methods_dir = root / "methods"
    method_modules = {p.stem for p in methods_dir.glob("*.py") if p.stem != "__init__" and is_method_module(p.stem)}
    assert {"dect", "adept", "bbt"} <= method_modules and not method_modules & set(FRAMEWORK)
    assert {p.name for p in methods_dir.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(FRAMEWORK)
    forbidden = {"data": ("backends", "methods", "bench", "cli"), "backends": ("methods", "bench", "cli"),
                 "methods": ("bench", "cli"), "bench": ("cli",),
                 "distributed.py": ("data", "backends", "methods", "bench", "cli", "metrics")}
    problems = []
    for path in root.rglob("*.py"):
        where = path.relative_to(root).parts
        for module in _imports(root, path):
            parts = module.split(".")
            declaration = where[:2] == ("methods", "configs") or where == ("methods", "core", "config.py")
            if parts[0] != "edgetune":
                if declaration and parts[0] not in TORCH_FREE:
                    problems.append(f"{'/'.join(where)} imports {module}: declarations are torch-free")
                continue
            target = parts[1] if len(parts) > 1 else ""
            if target in forbidden.get(where[0], ()):
                problems.append(f"{'/'.join(where)} imports {module}")
            imported_method = parts[1:2] == ["methods"] and len(parts) > 2 and parts[2] in method_modules
            if where[0] == "methods" and imported_method:
                if where[1] in FRAMEWORK:
                    problems.append(f"{'/'.join(where)} (framework) imports the method module {module}")
                elif where[1][:-3] != parts[2]:
                    problems.append(f"{'/'.join(where)} imports the method module {module}")
            if where[:2] == ("methods", "configs") and parts[:3] == ["edgetune", "methods", "core"] and (
                    parts[3:4] != ["config"]):
                problems.append(f"{'/'.join(where)} imports {module}: a declaration imports only core.config")
    assert not problems, problems


def test_the_declarations_are_the_registry():
    """What the command line parses with (the declarations, before any method or torch is imported) is what the
    registry runs: one config per registered method, and each method's class named by its config."""
    from edgetune.methods.configs import declared

    assert set(declared()) == set(METHODS)
    for name, config in declared().items():
        assert METHODS[name].config is config


def test_the_package_root_exports_every_method_and_imports_lazily():
    import subprocess
    import sys

    import edgetune

    for name, cls in METHODS.items():
        assert getattr(edgetune, cls.__name__) is cls and cls.__name__ in edgetune.__all__, name
    for public in edgetune.__all__:
        assert getattr(edgetune, public) is not None
    # parsing a command line (help, argument errors) reads the declarations only: no method module, so neither
    # torch nor numpy nor scikit-learn
    code = ("import sys; from edgetune.cli import build_parser; p = build_parser(); p.parse_args(['run', 'adept', "
            "'--steps', '3']); import edgetune; print(sorted(m for m in ('torch', 'numpy', 'sklearn', 'transformers', "
            "'edgetune.methods.adept', 'edgetune.methods.core.registry') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", sorted(n for n, c in METHODS.items() if issubclass(c, OutputEdgeMethod)))
def test_the_runner_and_fit_are_one_output_edge_cell(name, make_backend, toy_task):
    """The bench runner calls an output-edge method's prepare (prompts, words, features) and fit_prepared apart, to
    time them apart; fit is exactly those two halves, so a bench cell and a user's fit give the same model."""
    cls = METHODS[name]
    backend, sample = make_backend("causal"), toy_task.sample(4, seed=0)
    a = cls(backend, **cls.smoke_params).fit(sample)
    b = cls(backend, **cls.smoke_params)
    prepared = b.prepare(sample)
    b.fit_prepared(**vars(prepared))
    np.testing.assert_array_equal(a.class_scores(TEXTS), b.class_scores(TEXTS))
    assert prepared.template == a.templates_ and list(prepared.labels) == list(a.labels_)
