"""The stage-one teacher cache: HDF5 layout, crash-safe writer, reader, positives, FAISS index, quality."""
from cache.identity import identity_csr
from cache.index import build_index, default_nlist, load_index, save_index
from cache.layout import FORMAT_VERSION
from cache.paths import (
    cache_file,
    config_path,
    index_checksum_path,
    index_path,
    partial_path,
    quality_path,
    shard_path,
)
from cache.positives import build_positives
from cache.quality import quality_report
from cache.reader import TeacherCache
from cache.writer import CacheWriter

__all__ = [
    "FORMAT_VERSION", "CacheWriter", "TeacherCache", "build_index", "build_positives", "default_nlist",
    "identity_csr", "load_index", "partial_path", "quality_report", "save_index", "cache_file", "config_path",
    "index_checksum_path", "index_path", "quality_path", "shard_path",
]
