from .keypoint_head import CategoryKeypointHead, category_keypoint_loss  # noqa: F401 (registers)

__all__ = ["CategoryKeypointHead", "category_keypoint_loss"]
