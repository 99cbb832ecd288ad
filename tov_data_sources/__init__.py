"""Offline text sources for ToV Select demos and benchmarks (plain Python, no model code).

Readers (Debian `fortunes`, `bsdgames` quiz, dictd `dict-*` databases, MMLU/BBH exemplar YAMLs of
PyPI `lm-eval`) return lists of dicts; `instructions` templates them into
`{"prompt", "completion", "source"}` rows and samples pools and target splits.
"""

from .instructions import (  # noqa: F401
    available_sources,
    est_tokens,
    make_pool,
    make_splits,
    row_chars,
    row_key,
    sample_rows,
    source_rows,
)
from .readers import (  # noqa: F401
    DICTD_DIR,
    FORTUNES_DIR,
    QUIZ_DIR,
    dict_names,
    dictd_b64,
    expand_quiz,
    fortune_categories,
    lm_eval_tasks_dir,
    quiz_categories,
    read_bbh,
    read_bbh_cot,
    read_dict,
    read_fortunes,
    read_mmlu_cot,
    read_quiz,
    read_quiz_index,
)
