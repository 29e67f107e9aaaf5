"""Old home of the COCO crop sessions and the Karpathy retrieval probes, kept so that existing imports
and configs (``clipcl_runner.data.coco.<name>``) still resolve. New code: :mod:`.coco_crops`
(update tasks) and :mod:`.karpathy` (retrieval probes, the paper's probe list)."""

from .coco_crops import (  # noqa: F401
    BOX_ROUNDINGS,
    SPLITS,
    CocoCrops,
    CropIndex,
    CropRecord,
    build_crop_index,
    coco_sessions,
    crop_box,
    load_crop_index,
)
from .json_cache import INDEX_VERSION  # noqa: F401
from .karpathy import (  # noqa: F401
    COCO_KARPATHY_FILE,
    FLICKR_IMAGES_DIR,
    FLICKR_KARPATHY_FILE,
    coco_retrieval_probe,
    flickr30k_retrieval_probe,
    karpathy_retrieval_probe,
    paper_probes,
    read_karpathy,
)
