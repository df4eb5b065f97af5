"""For the page tests: the login link a guardian gets from `guardian page`, and where a browser is."""

from __future__ import annotations

import shutil

from node.testing.processes import guardian

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
NO_BROWSER = ("no headless browser here: install one with `apt-get install chromium chromium-driver` "
              f"(the test drives {CHROMIUM} through {CHROMEDRIVER})")


def login_link(node, scheme: str = "http") -> str:
    """`guardian page --config node.toml`, as the guardian types it: the one-time link it prints."""
    result = guardian("page", "--config", node.config)
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith(f"{scheme}://127.0.0.1:") and "/login?token=" in url, url
    return url


def browser_installed() -> bool:
    return all(shutil.which(p) for p in (CHROMIUM, CHROMEDRIVER))
