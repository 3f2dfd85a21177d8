"""The web console in a real browser: sign in, create an instance with the wizard,
watch it run, use its VNC console, stop and delete it; what a reader sees and may
do; CSRF; console tickets that are used or expired."""

import re
import subprocess
import time

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import PASSWORD, TICKET_SECONDS, shot, sign_in

pytestmark = pytest.mark.integration

OPEN_SOCKET = """async (url) => await new Promise((resolve) => {
  const ws = new WebSocket(url, ["binary"]);
  const timer = setTimeout(() => resolve("timeout"), 15000);
  ws.onopen = () => { clearTimeout(timer); ws.close(); resolve("open"); };
  ws.onclose = () => { clearTimeout(timer); resolve("refused"); };
})"""
NEW_TICKET = """async (id) => {
  const t = await Nubis.api("POST", `/api/v1/instances/${id}/console`, {});
  return `${location.origin.replace("http", "ws")}${t.websocket}?ticket=${t.ticket}`;
}"""
POST_STATUS = """async (path) => {
  try { await Nubis.api("POST", path, {}); return 200; } catch (e) { return e.status; }
}"""
POST_WITHOUT_CSRF = """async (path) => (await fetch(path, {
  method: "POST", credentials: "same-origin",
  headers: {"Content-Type": "application/json"}, body: "{}"})).status"""


def admin_password(server) -> str:
    return (server.data_dir / "admin-password").read_text().strip()


def canvas(page: Page) -> str:
    return page.locator("#screen canvas").evaluate("c => c.toDataURL()")


def test_create_use_and_delete_an_instance_in_the_browser(server, site, page: Page):
    page.goto(site + "/instances")
    page.wait_for_url("**/login?next=/instances")
    shot(page, "login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(admin_password(server))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/instances")
    page.goto(site + "/dashboard")
    expect(page.get_by_test_id("count-hosts")).to_have_text("1")
    shot(page, "dashboard")

    # the wizard: inline messages first, then a real creation followed to `running`
    page.goto(site + "/instances")
    page.get_by_role("link", name="Create instance").click()
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-image-error")).to_have_text("Choose an image.")
    page.get_by_label("Name").fill("bad name!")
    page.get_by_label("Image").select_option(label="nubis-tiny")
    page.get_by_label("Flavor").select_option(label="m1.tiny (1 vCPU, 128 MiB, 1 GiB)")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#f-name-error")).to_contain_text("letters, digits")
    page.get_by_label("Name").fill("web-e2e")
    expect(page.locator("#f-name-error")).to_have_text("")
    shot(page, "wizard")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#progress")).to_be_visible()
    expect(page.locator("#p-instance")).to_have_text("running", timeout=240_000)
    expect(page.locator("#p-status")).to_have_text("succeeded")
    page.get_by_role("link", name="Open the instance").click()
    expect(page.locator("h1 .badge")).to_have_text("running")
    inst_id = page.url.rsplit("/", 1)[1]
    server.wait_console(inst_id)  # the guest has booted
    shot(page, "instance")

    # the same name again: the API's refusal is shown next to the field
    page.goto(site + "/instances/new")
    page.get_by_label("Name").fill("web-e2e")
    page.get_by_label("Image").select_option(label="nubis-tiny")
    page.get_by_label("Flavor").select_option(label="m1.tiny (1 vCPU, 128 MiB, 1 GiB)")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#f-name-error")).to_contain_text("already exists")

    page.goto(site + "/instances?q=e2e&status=running")
    expect(page.locator('tr[data-instance="web-e2e"]')).to_have_count(1)
    shot(page, "instances")

    # the console: noVNC through Nubis's proxy; typing changes the guest's screen
    page.goto(f"{site}/instances/{inst_id}")
    page.get_by_role("link", name="Console").click()
    expect(page.locator("#console-status")).to_have_text("Connected")
    screen = page.locator("#screen canvas")
    expect(screen).to_be_visible()
    before = canvas(page)
    screen.click()
    page.keyboard.type("echo nubis-e2e")
    page.keyboard.press("Enter")
    deadline = time.monotonic() + 30
    while canvas(page) == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert canvas(page) != before, "the guest's screen did not change"
    shot(page, "console")

    # a ticket opens one connection; a used or expired one opens none
    url = page.evaluate(NEW_TICKET, inst_id)
    assert page.evaluate(OPEN_SOCKET, url) == "open"
    assert page.evaluate(OPEN_SOCKET, url) == "refused"
    late = page.evaluate(NEW_TICKET, inst_id)
    time.sleep(TICKET_SECONDS + 1)
    assert page.evaluate(OPEN_SOCKET, late) == "refused"
    other = page.evaluate(NEW_TICKET, inst_id).replace(inst_id, "0" * 8 + inst_id[8:])
    assert page.evaluate(OPEN_SOCKET, other) == "refused"

    # charts of the instance's samples, an alarm rule made in the alarms page
    page.goto(f"{site}/instances/{inst_id}")
    cpu_chart = page.locator('.chart[data-title="CPU"]')
    expect(cpu_chart).to_have_attribute("data-points", re.compile(r"^[1-9]"), timeout=30_000)
    expect(cpu_chart.locator("canvas")).to_be_visible()
    shot(page, "instance-metrics")
    page.goto(site + "/alarms")
    page.get_by_text("New alarm rule").click()
    page.get_by_label("Name", exact=True).fill("e2e-cpu")
    page.get_by_label("Instance or host (name or id)").fill("web-e2e")
    page.get_by_label("Threshold").fill("-1")  # always above: the rule fires
    page.get_by_label("For (seconds)").fill("4")
    page.get_by_role("button", name="Create rule").click()
    row = page.locator('tr[data-alarm="e2e-cpu"]')
    expect(row.locator(".badge").first).to_have_text("alarm", timeout=30_000)
    row.get_by_role("button", name="Acknowledge").click()
    expect(row).to_contain_text("acknowledged")
    shot(page, "alarms")
    page.goto(site + "/events")
    expect(page.locator("tbody")).to_contain_text("alarm e2e-cpu: insufficient_data -> alarm")
    shot(page, "events")
    page.goto(site + "/dashboard")
    expect(page.locator(".alarm-list")).to_contain_text("e2e-cpu")
    shot(page, "dashboard-alarm")

    # stop, with confirmation; the page follows the state by itself
    page.goto(f"{site}/instances/{inst_id}")
    page.get_by_role("button", name="Stop", exact=True).click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Stop web-e2e?")
    dialog.get_by_role("button", name="Cancel").click()
    assert server.instance(inst_id)["status"] == "running"  # cancelled: nothing happened
    page.get_by_role("button", name="Stop", exact=True).click()
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator("h1 .badge")).to_have_text("stopped", timeout=90_000)
    expect(page.get_by_role("button", name="Start", exact=True)).to_be_visible()

    page.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Confirm").click()
    page.wait_for_url("**/instances")
    expect(page.locator('tr[data-instance="web-e2e"]')).to_have_count(0, timeout=90_000)
    assert server.client.get(f"/instances/{inst_id}").status_code == 404

    for name in ("hosts", "images", "flavors", "volumes", "networks", "routers", "projects"):
        page.goto(f"{site}/{name}")
        expect(page.locator("h1")).to_have_text(name.capitalize())
        shot(page, name)
    page.goto(f"{site}/floating-ips")
    expect(page.locator("h1")).to_have_text("Floating IPs")
    page.locator("form[action='/logout'] button").click()
    page.wait_for_url("**/login")
    page.goto(site + "/dashboard")
    page.wait_for_url("**/login?next=/dashboard")


@pytest.fixture
def stopped_instance(server):
    resp = server.client.post(
        "/instances", json={"name": "ro-e2e", "image": "nubis-tiny", "flavor": "m1.tiny"}
    )
    assert resp.status_code == 202, resp.text
    inst = resp.json()
    assert server.wait_task(inst["task_id"])["status"] == "succeeded"
    server.act(inst["id"], "force-stop")
    yield inst
    resp = server.client.delete(f"/instances/{inst['id']}")
    assert server.wait_task(resp.json()["task_id"])["status"] == "succeeded"


def test_resize_and_confirm_in_the_browser(server, site, page: Page, stopped_instance):
    inst = stopped_instance
    sign_in(page, site, "admin", admin_password(server))
    page.goto(f"{site}/instances/{inst['id']}")
    expect(page.get_by_role("button", name="Confirm resize")).to_have_count(0)
    page.locator("summary", has_text="Resize").click()  # opens the form
    small = server.client.get("/flavors/m1.small").json()
    page.get_by_label("New flavor").select_option(value=small["id"])
    page.get_by_role("button", name="Resize", exact=True).click()
    # the page follows the task: the new sizes, and the choice to keep or undo them
    expect(page.get_by_role("button", name="Confirm resize")).to_be_visible(timeout=90_000)
    expect(page.locator(".facts")).to_contain_text("resized from 1 vCPU")
    resized = server.instance(inst["id"])
    assert (resized["memory_mib"], resized["disk_gib"], resized["status"]) == (512, 5, "stopped")
    shot(page, "instance-resized")
    page.get_by_role("button", name="Confirm resize").click()
    # the button goes as soon as the confirmation runs; the page says it is done
    # once the "resized from ...: confirm or revert" note is gone
    expect(page.get_by_role("button", name="Confirm resize")).to_have_count(0, timeout=90_000)
    expect(page.locator(".facts")).not_to_contain_text("resized from", timeout=90_000)
    assert server.instance(inst["id"])["resize_from"] is None
    expect(page.locator(".facts")).to_contain_text("m1.small")


def test_a_reader_sees_no_actions_and_cannot_post(
    server, site, reader, page: Page, stopped_instance
):
    inst = stopped_instance
    sign_in(page, site, reader, PASSWORD)
    page.goto(site + "/instances")
    expect(page.locator('tr[data-instance="ro-e2e"]')).to_have_count(1)
    expect(page.get_by_role("link", name="Create instance")).to_have_count(0)
    page.goto(f"{site}/instances/{inst['id']}")
    expect(page.locator("h1 .badge")).to_have_text("stopped")
    expect(page.locator("button.act")).to_have_count(0)
    expect(page.locator("form.api-form")).to_have_count(0)  # no resize either
    expect(page.get_by_role("link", name="Console")).to_have_count(0)
    shot(page, "instance-reader")
    status = page.evaluate(POST_STATUS, f"/api/v1/instances/{inst['id']}/actions/start")
    assert status == 403
    assert page.goto(site + "/instances/new").status == 403
    assert server.instance(inst["id"])["status"] == "stopped"


def test_a_post_without_the_csrf_token_is_refused(server, site, page: Page, stopped_instance):
    inst = stopped_instance
    sign_in(page, site, "admin", admin_password(server))
    page.goto(f"{site}/instances/{inst['id']}")
    start = f"/api/v1/instances/{inst['id']}/actions/start"
    assert page.evaluate(POST_WITHOUT_CSRF, start) == 403
    time.sleep(1)
    assert server.instance(inst["id"])["status"] == "stopped"
    assert server.instance(inst["id"])["task_state"] is None


def test_pages_fit_a_phone_screen(server, site, browser, stopped_instance):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        sign_in(page, site, "admin", admin_password(server))
        for path, name in (
            ("/dashboard", "phone-dashboard"),
            ("/instances", "phone-instances"),
            (f"/instances/{stopped_instance['id']}", "phone-instance"),
        ):
            page.goto(site + path)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{path} is wider than the phone's screen by {overflow}px"
            shot(page, name)
    finally:
        context.close()


def test_upload_an_image_with_a_progress_bar(server, site, page: Page, tmp_path):
    disk = tmp_path / "upload.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    sign_in(page, site, "admin", admin_password(server))
    page.goto(site + "/images")
    page.get_by_label("Name").fill("uploaded-e2e")
    page.get_by_label("Image file").set_input_files(str(disk))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#u-status")).to_have_text("upload.qcow2: uploaded.", timeout=60_000)
    expect(page.locator("#u-progress")).to_have_attribute("value", "100")
    row = page.locator("tr", has_text="uploaded-e2e")
    expect(row).to_contain_text("active")  # the list refreshed by itself
    expect(row).to_contain_text("qcow2")
    shot(page, "images-upload")
    row.get_by_role("button", name="Delete").click()
    page.locator("dialog#confirm").get_by_role("button", name="Confirm").click()
    expect(page.locator("tr", has_text="uploaded-e2e")).to_have_count(0)
    assert server.client.get("/images/uploaded-e2e").status_code == 404
