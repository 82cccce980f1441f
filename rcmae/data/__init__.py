"""Data: audio I/O and checks, folders as index tables (DCASE 2020 / 2021-2025 / own layouts), the log-mel front-end,
torch datasets, and the synthetic demo factory. Imports nothing else of rcmae but `rcmae.files`."""

from rcmae.data.index import (
    CLASS_MODES,
    COLUMNS,
    LABELS,
    SPLITS,
    DatasetLayoutError,
    attach_ground_truth,
    attribute_classes,
    class_kinds,
    class_name,
    count_table,
    domain_counts,
    finetune_classes,
    has_domains,
    id_classes,
    index_dataset,
    row_classes,
    split_index,
)
from rcmae.data.loading import (
    LoadReport,
    load_waveforms,
)
from rcmae.data.names import (
    parse_attributes,
    parse_name,
)

__all__ = [
    "parse_name",
    "parse_attributes",
    "COLUMNS",
    "SPLITS",
    "LABELS",
    "DatasetLayoutError",
    "index_dataset",
    "attach_ground_truth",
    "split_index",
    "count_table",
    "has_domains",
    "domain_counts",
    "attribute_classes",
    "class_name",
    "id_classes",
    "CLASS_MODES",
    "class_kinds",
    "row_classes",
    "finetune_classes",
    "LoadReport",
    "load_waveforms",
]
