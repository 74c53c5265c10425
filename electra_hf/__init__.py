"""electra_hf: ELECTRA pre-training and fine-tuning as a Hugging Face Transformers extension.

Importing the package registers the pre-training model with `AutoConfig` / `AutoModel`.
"""

__version__ = "0.1.0"

from .collator import DataCollatorForElectra
from .configuration import PRESETS, ElectraPretrainingConfig
from .export import export_pretrained, finetuning_checkpoint
from .modeling import ElectraForRTDPretraining, ElectraPretrainingOutput

__all__ = [
    "PRESETS",
    "DataCollatorForElectra",
    "ElectraForRTDPretraining",
    "ElectraPretrainingConfig",
    "ElectraPretrainingOutput",
    "export_pretrained",
    "finetuning_checkpoint",
]
