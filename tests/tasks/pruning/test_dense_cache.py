"""The dense-model cache key: what the model is trained from, not where its files live."""

from tasks.pruning import dense_cache_path
from tests.hydra_config import compose_config


def _path(tmp_path, *overrides):
    cfg = compose_config(tmp_path, ["task=prune_lm", f"task.cache_dir={tmp_path}", *overrides])
    return dense_cache_path(cfg, {"steps": cfg.task.dense_steps})


def test_the_token_cache_folder_does_not_change_the_dense_model_key(tmp_path):
    assert _path(tmp_path) == _path(tmp_path, f"data.cache_dir={tmp_path / 'elsewhere'}")
    assert _path(tmp_path) == _path(tmp_path, "data.num_workers=2")


def test_what_the_model_learns_from_changes_the_key(tmp_path):
    base = _path(tmp_path)
    assert base != _path(tmp_path, "data.seq_len=128")
    assert base != _path(tmp_path, "net.hidden_size=128")
    assert base != _path(tmp_path, "seed=1")
