"""Fixtures of the browser tests: one JupyterLab server and one headless Chromium for the whole session."""
import pytest

from jupyter_browser import JupyterServer, start_chromium


@pytest.fixture(scope="session")
def jupyter_server():
    server = JupyterServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chromium():
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()
