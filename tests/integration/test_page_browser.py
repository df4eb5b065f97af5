"""Seed 000 on the guardian's page, in a real headless Chromium, on three real nodes (n = 3, k = 2).

Each guardian logs in with the link of `guardian page`, reads the proposal's hash and accepts it on its own
node's page, watches the ceremony run, downloads its encrypted key backup (passphrase twice), confirms two
copies, verifies one by choosing the file, and sees every guardian's marks turn green on every node's page
(swapped in by the page's polling script, without a reload); then downloads the certificate. A screenshot of
every page goes to the test's directory, and to $GN_SCREENSHOTS when set.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import trio

from node.custody.backup_file import read_backup
from node.page.views import spoken
from page_nodes import CHROMEDRIVER, CHROMIUM, NO_BROWSER, browser_installed, login_link
from test_ceremony_nodes import completes, make_cluster, propose, start_cluster, wait_status, write_election

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not browser_installed(), reason=NO_BROWSER)]

PASSPHRASE = "correct horse battery staple of g"
WAIT = 120                       # a 3-node ceremony on the standard parameters takes tens of seconds


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1400", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False,
                                              "safebrowsing.enabled": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


class Guardian:
    """One guardian's tab in the browser, on its own node's page."""

    def __init__(self, driver, node, shots: Path) -> None:
        self.driver, self.node, self.shots = driver, node, shots
        self.handle = None
        self.base = None

    def open(self) -> None:
        self.driver.switch_to.new_window("tab")
        self.handle = self.driver.current_window_handle
        link = login_link(self.node)
        self.driver.get(link)
        self.base = link.split("login?")[0]
        assert self.driver.current_url == self.base, "the token must leave the address bar"

    def front(self):
        self.driver.switch_to.window(self.handle)
        return self.driver

    def go(self, path: str):
        self.front().get(self.base + path.lstrip("/"))
        return self.driver

    def find(self, css: str):
        from selenium.webdriver.common.by import By
        return self.front().find_element(By.CSS_SELECTOR, css)

    def wait_for(self, condition, what: str, timeout: float = WAIT):
        from selenium.webdriver.support.ui import WebDriverWait
        return WebDriverWait(self.front(), timeout, poll_frequency=0.3).until(
            lambda d: condition(d), f"{self.node.name}: {what}")

    def wait_text(self, css: str, text: str, timeout: float = WAIT) -> None:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        def has(d):
            try:
                return text in self.find(css).text
            except (NoSuchElementException, StaleElementReferenceException):
                return False
        self.wait_for(has, f"{text!r} in {css}", timeout)

    def screenshot(self, name: str) -> None:
        path = self.shots / f"{self.node.name}-{name}.png"
        assert self.front().save_screenshot(str(path)), path
        if os.environ.get("GN_SCREENSHOTS"):
            target = Path(os.environ["GN_SCREENSHOTS"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)


def downloaded(directory: Path, name: str, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in directory.iterdir() if p.name.startswith(name) and not p.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no download {name}* in {directory}: {[p.name for p in directory.iterdir()]}")


def marks(g: Guardian) -> dict[str, list[bool]]:
    from selenium.webdriver.common.by import By
    rows = g.find("#custody-table").find_elements(By.CSS_SELECTOR, "tbody tr")
    return {row.get_attribute("id").removeprefix("marks-"):
            ["ok" in cell.get_attribute("class").split() for cell in row.find_elements(By.CSS_SELECTOR, "td.mark")]
            for row in rows}


def all_green(g: Guardian, names: list[str]) -> bool:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    try:
        return marks(g) == {name: [True] * 4 for name in names}
    except (NoSuchElementException, StaleElementReferenceException):
        return False


def test_seed_000_on_each_guardians_page(browser, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    cluster, nodes = make_cluster(["g1", "g2", "g3"])
    names = [n.name for n in nodes]
    with cluster:
        start_cluster(cluster, nodes)
        session = trio.run(propose, nodes[0], write_election(cluster.base, 2))
        trio.run(wait_status, nodes, session, "proposed")
        guardians = [Guardian(browser, node, shots) for node in nodes]
        for g in guardians:
            g.open()
            g.wait_text(".invitation", "awaits your vote")          # the overview's highlighted invitation
            g.screenshot("overview-invitation")

        # Read the proposal's hash aloud, compare, accept: on each guardian's own page.
        for g in guardians:
            g.go("/ceremony")
            assert g.find(f"#hash-{session[:16]}").text == spoken(session)
            assert g.node.fingerprint in g.find(f"#ceremony-{session[:16]}").text
            g.screenshot("ceremony-proposal")
            g.find("#accept").click()
            g.wait_text("#notice", "You accepted the proposal")

        guardians[0].wait_text(f"#ceremony-{session[:16]}", "Joint key", WAIT)    # the page follows the phases
        guardians[0].screenshot("ceremony-complete")
        trio.run(completes, nodes, session)

        # Download, confirm two copies, verify a copy: each guardian on its own page.
        for g in guardians[:2]:
            custody_steps(g, browser.downloads, session)
        last = guardians[2]
        custody_steps(last, browser.downloads, session, verify=False)
        first = guardians[0]
        first.go("/custody")
        assert marks(first)[last.node.name] == [True, True, True, False]
        first.front().execute_script("window.notReloaded = true")
        verify_copy(last, browser.downloads, session)
        # g1's page, open all along, turns g3's last mark green by itself: swapped in, not reloaded.
        first.wait_for(lambda d: all_green(first, names), "every guardian's marks green")
        first.wait_text("#custody-complete", "key custody is complete")
        assert first.front().execute_script("return window.notReloaded") is True

        for g in guardians:
            g.go("/custody")
            g.wait_for(lambda d, g=g: all_green(g, names), "every guardian's marks green")
            g.wait_text("#custody-complete", "key custody is complete")
            g.screenshot("custody-complete")
        first.find("#certificate-download").click()
        certificate = json.loads(downloaded(browser.downloads, "certificate").read_text())
        assert certificate == trio.run(lambda: nodes[0].request("certificate"))
        assert [s["name"] for s in certificate["signatures"]] == names

        for g in guardians:
            g.go("/")
            g.wait_text("#expected", "Key custody is complete")
            g.screenshot("overview")
            for page in ("decryption", "audit"):
                g.go(f"/{page}")
                g.screenshot(page)
            assert "audit trail OK" in g.find("#audit-check").text


def custody_steps(g: Guardian, downloads: Path, session: str, verify: bool = True) -> None:
    g.go("/custody")
    g.wait_text(".invitation, #step-download", "Download your encrypted key backup")
    g.screenshot("custody-download")
    g.find("#passphrase").send_keys(PASSPHRASE + g.node.name)
    g.find("#passphrase2").send_keys(PASSPHRASE + g.node.name)
    g.find("#download").click()
    path = downloaded(downloads, f"{g.node.name}-{session[:16]}")
    # The page reloads itself once the step is recorded, and shows the fingerprint of the file it sent.
    g.wait_text("#backup-fingerprint", read_backup(path).fingerprint())
    g.screenshot("custody-confirm")
    g.find("#copies").clear()
    g.find("#copies").send_keys("2")
    g.find("#confirm").click()
    g.wait_text("#notice", "Recorded: 2 separate copies")
    g.screenshot("custody-verify")
    if verify:
        verify_copy(g, downloads, session)


def verify_copy(g: Guardian, downloads: Path, session: str) -> None:
    path = downloaded(downloads, f"{g.node.name}-{session[:16]}")
    copy = downloads / "copies" / path.name          # a second copy, as the guardian would make one
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(path, copy)
    g.go("/custody")
    g.find("#file").send_keys(str(copy))
    g.find("#verify-passphrase").send_keys(PASSPHRASE + g.node.name)
    g.find("#verify").click()
    g.wait_text("#notice", "restores exactly your key")
