"""The service in-process, shared by the client and the LiteLLM tests."""

import pytest
from fastapi.testclient import TestClient
from tierwise.service.app import create_app

from tools.tiny_model import make_settings


@pytest.fixture(scope="module")
def app(tiny_model_dir, tiny_classifier):
    settings = make_settings(tiny_model_dir, micro_batching=False)  # callable from any event loop
    application = create_app(settings, classifier_factory=lambda _: tiny_classifier)
    with TestClient(application) as test_client:
        yield application, test_client
