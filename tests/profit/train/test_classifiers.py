"""What `python -m profit.train` writes besides the networks."""

from profit.train.classifiers import DEFAULT_OUT, _readme


def test_models_readme_is_what_training_writes() -> None:
    """Retraining rewrites networks/models/README.md from `_readme()`; the shipped file must
    be that text, so a rerun drops no row (the profit/ zoo, the autoencoder)."""
    assert (DEFAULT_OUT / "README.md").read_text() == _readme()
