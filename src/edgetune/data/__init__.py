"""Tasks, templates, verbalizers and sampling."""

from .example import Dataset, Example, as_examples
from .io import examples_from_hf, read_examples
from .sampling import sample_k_per_class, subsample
from .tasks import TASKS, Task, custom_task, load_task, parse_label_words
from .templates import Prompt, Template

__all__ = [
    "TASKS", "Dataset", "Example", "Prompt", "Task", "Template", "as_examples", "custom_task",
    "examples_from_hf", "load_task", "parse_label_words", "read_examples", "sample_k_per_class", "subsample",
]
