"""Tasks. Importing this package registers every task (each module uses @registry.register_task).

Add one import line per task module below.
"""

from lavislite.tasks import (  # noqa: F401  (registration)
    captioning,
    image_text_pretrain,
    multimodal_classification,
    retrieval,  # also registers video_retrieval
    vqa,  # also registers video_qa
)
from lavislite.tasks.base_task import BaseTask, setup_task

__all__ = ["BaseTask", "setup_task"]
