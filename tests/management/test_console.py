"""The web console in a real browser: Debian's chromium driven by playwright, against a
real broker. Every wait is on the page's state (playwright's expect), never a sleep.

Chromium is installed with apt-get when it is missing (playwright's own browser download
is not used), so the test runs the same on a fresh CI machine.
"""

from __future__ import annotations

import io
import re
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from interop.system import ensure_debian_package, free_port
from tests.support.broker_process import BrokerProcess

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
BACKGROUND = (0xF3, 0xF5, 0xF7)  # --ground in console.css
PUBLISH_GREEN = (0x2F, 0x6F, 0x4F)  # the publish line in overview.js
WAIT_MS = 10_000


@pytest.fixture(scope="session")
def chromium() -> str:
    ensure_debian_package("chromium", "chromium")
    path = shutil.which("chromium")
    assert path is not None, "Debian's chromium is not installed"
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("console")
    config = folder / "amqpd.yaml"
    # Rates sampled twice a second: the charts get data in a second or two.
    config.write_text("management:\n  sample_interval_s: 0.5\n")
    process = BrokerProcess(
        folder / "data",
        ["--config", str(config), "--port", "0", "--management-port", str(free_port())],
    ).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


@pytest.fixture(scope="module")
def console_url(broker: BrokerProcess) -> str:
    match = broker.wait_for(r"management API and web console on (http://\S+/)")
    return match.group(1)


@pytest.fixture
def page(browser: Browser, console_url: str) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # a fresh sessionStorage each test
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(console_url)
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def log_in(page: Page, password: str = "guest") -> None:
    page.get_by_label("Username").fill("guest")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_the_page_needs_no_login_and_the_api_does(console_url: str) -> None:
    for path in ("", "console/app.js", "console/console.css"):
        with urllib.request.urlopen(console_url + path, timeout=5) as response:
            assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(console_url + "api/overview", timeout=5)
    refused.value.close()
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(console_url + "console/__init__.py", timeout=5)
    missing.value.close()
    assert missing.value.code == 404


def test_a_wrong_password_is_refused_with_a_message(page: Page) -> None:
    log_in(page, password="wrong")
    expect(page.locator("#login-error")).to_have_text("Login failed: wrong username or password.")
    expect(page.locator("#app")).to_be_hidden()
    log_in(page)
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#login-error")).to_be_hidden()


def test_queues_peek_and_publish(page: Page, broker: BrokerProcess) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    channel = connection.channel()
    channel.queue_declare("orders", durable=True)
    for number in (1, 2, 3):
        channel.basic_publish(
            "",
            "orders",
            f"order {number}".encode(),
            pika.BasicProperties(content_type="text/plain", headers={"shop": "north"}),
        )
    try:
        check_queue_pages(page)
    finally:
        channel.queue_delete("orders")  # the other tests see the node's totals
        connection.close()


def check_queue_pages(page: Page) -> None:
    log_in(page)
    expect(page.locator("[data-total=messages]")).to_have_text("3")
    page.get_by_role("link", name="Queues", exact=True).click()
    row = page.locator("[data-list=queues] tr[data-name=orders]")
    expect(row.locator("[data-field=messages]")).to_have_text("3")
    expect(row.locator("[data-field=consumers]")).to_have_text("0")
    filter_box = page.get_by_label("Filter by name")
    filter_box.fill("nothing-like-it")
    expect(page.get_by_text("Nothing matches the filter.")).to_be_visible()
    filter_box.fill("ord")
    expect(row).to_be_visible()

    row.get_by_role("link", name="orders").click()
    expect(page.get_by_role("heading", name="Queue orders")).to_be_visible()
    expect(page.locator("[data-field=messages]")).to_have_text("3")

    # Peek: the messages are taken and requeued, so the count stays.
    page.get_by_role("button", name="Peek").click()
    payloads = page.locator(".message .payload")
    expect(payloads).to_have_text(["order 1", "order 2", "order 3"])
    expect(page.locator(".message .properties").first).to_contain_text(
        '"content_type": "text/plain"'
    )
    expect(page.locator(".message .properties").first).to_contain_text('"shop": "north"')
    expect(page.locator("[data-field=messages]")).to_have_text("3")

    # Publish through the form: to the default exchange, the queue name as routing key.
    expect(page.get_by_label("Routing key")).to_have_value("orders")
    page.get_by_label("Payload").fill("from the browser")
    page.get_by_role("button", name="Publish message").click()
    expect(page.get_by_text("Message published.")).to_be_visible()
    expect(page.locator("[data-field=messages]")).to_have_text("4")
    page.get_by_role("button", name="Peek").click()
    expect(payloads).to_have_text(["order 1", "order 2", "order 3", "from the browser"])

    # Headers that are not JSON, and an API refusal, are shown with their reason.
    page.get_by_label("Headers (JSON)").fill("{not json")
    page.get_by_role("button", name="Publish message").click()
    expect(page.get_by_text("Headers are not JSON")).to_be_visible()
    page.goto(page.url.split("#")[0] + "#/queues/%2F/no-such-queue")
    expect(page.locator("#error")).to_have_text("404: Not Found")


def test_the_overview_charts_render(page: Page, broker: BrokerProcess, tmp_path: Path) -> None:
    stop = threading.Event()

    def publish_until_stopped() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(broker.url))
        try:
            channel = connection.channel()
            channel.queue_declare("rates")
            while not stop.is_set():
                for _ in range(20):
                    channel.basic_publish("", "rates", b"tick")
                connection.sleep(0.05)
            channel.queue_delete("rates")
        finally:
            connection.close()

    publisher = threading.Thread(target=publish_until_stopped, daemon=True)
    log_in(page)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    publisher.start()
    try:
        # Wait until the chart has three samples or more, the latest with a publish rate.
        expect(page.locator("#view")).to_have_attribute(
            "data-samples", re.compile(r"^([3-9]|\d\d+)$")
        )
        legend = page.locator(".chart .legend span").first
        expect(legend).to_have_text(re.compile(r"^Publish [1-9][\d,.]*/s$"))
    finally:
        stop.set()
        publisher.join(10)

    # The canvas itself: the publish line's colour is drawn on it.
    line_pixels = page.evaluate(
        """([r, g, b]) => {
            const canvas = document.querySelector("#chart-rates");
            const context = canvas.getContext("2d");
            const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let count = 0;
            for (let i = 0; i < data.length; i += 4) {
              const off = Math.abs(data[i] - r) + Math.abs(data[i + 1] - g)
                + Math.abs(data[i + 2] - b);
              if (data[i + 3] > 200 && off < 60) count += 1;
            }
            return count;
        }""",
        list(PUBLISH_GREEN),
    )
    assert line_pixels > 100, f"the rate chart has only {line_pixels} pixels of the publish line"

    # The screenshot: a real PNG of the viewport, mostly not the bare background, and the
    # chart's area full of drawing.
    shot = page.screenshot(path=tmp_path / "console-overview.png")
    assert len(shot) > 20_000, f"the screenshot is only {len(shot)} bytes"
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    assert image.size == (VIEWPORT["width"], VIEWPORT["height"])
    area = image.width * image.height
    everything = image.getcolors(maxcolors=area) or []
    drawn = sum(count for count, colour in everything if colour != BACKGROUND) / area
    assert drawn > 0.3, f"only {drawn:.0%} of the screenshot differs from the background"
    box = page.locator("#chart-rates").bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 150
    chart = image.crop(
        (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"]))
    )
    colours = chart.getcolors(maxcolors=chart.width * chart.height) or []
    assert len(colours) > 20, "the chart area holds hardly any colours: nothing was drawn"
    greenish = sum(
        count
        for count, (r, g, b) in colours
        if abs(r - PUBLISH_GREEN[0]) + abs(g - PUBLISH_GREEN[1]) + abs(b - PUBLISH_GREEN[2]) < 60
    )
    assert greenish > 100, "the publish line is not in the screenshot"
