"""Captions, images and vocabularies: every dataset layout loaded into one `CaptionDataset`."""
from captionlens.data.coco import (
    CocoAnnotations,
    CocoCategory,
    CocoDataset,
    CocoImage,
    CocoInstance,
    load_coco,
    load_coco_annotations,
)
from captionlens.data.datasets import FORMATS, CaptionTrainingSet, detect_format, load_dataset
from captionlens.data.flickr import hash_split, load_flickr8k, load_kaggle_flickr8k
from captionlens.data.flickr30k_entities import (
    EntityCounts,
    Grounded,
    ImageEntities,
    Phrase,
    entity_counts,
    load_entities,
    load_flickr30k_entities,
    word_grounding,
)
from captionlens.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageLoadError,
    Preprocessing,
    load_image,
    load_image_tensor,
)
from captionlens.data.karpathy import load_karpathy
from captionlens.data.records import SPLITS, CaptionDataset, CaptionRecord
from captionlens.data.shapes import generate_shapes, load_grounding, load_mask, word_boxes, word_refs
from captionlens.data.vocabulary import Vocabulary, tokenize

__all__ = [
    "FORMATS", "IMAGENET_MEAN", "IMAGENET_STD", "SPLITS", "CaptionDataset", "CaptionRecord", "CaptionTrainingSet",
    "ImageLoadError", "Preprocessing", "Vocabulary", "detect_format", "generate_shapes", "hash_split",
    "load_dataset", "load_flickr8k", "load_grounding", "load_image", "load_image_tensor", "load_kaggle_flickr8k",
    "load_karpathy", "load_mask", "tokenize", "word_boxes", "word_refs",
    "EntityCounts", "Grounded", "ImageEntities", "Phrase", "entity_counts", "load_entities",
    "load_flickr30k_entities", "word_grounding",
    "CocoAnnotations", "CocoCategory", "CocoDataset", "CocoImage", "CocoInstance", "load_coco", "load_coco_annotations",
]
