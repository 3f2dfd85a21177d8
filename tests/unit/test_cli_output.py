"""What the CLI prints is the data as it is: a fingerprint or MAC address holding
":cd:" is no emoji, brackets in a value or an error are no markup."""

from nubis.cli import client

FINGERPRINT = "02:1D:54:0E:C0:CD:C8:10"  # ":CD:" is rich's emoji code for 💿
MAC = "52:54:00:ab:cd:ef"


def test_tables_show_values_as_they_are():
    with client.console.capture() as out:
        client.show({"items": [{"name": "[bold]x[/]", "mac": MAC}]}, "table", ["name", "mac"])
        client.show({"fingerprint": FINGERPRINT}, "table", [])
    text = out.get()
    assert MAC in text and FINGERPRINT in text and "[bold]x[/]" in text
    assert "💿" not in text


def test_errors_show_the_servers_words_as_they_are():
    with client.err_console.capture() as out:
        client.fail(f"the certificate has the fingerprint {FINGERPRINT}, not [/x]")
    assert f"{FINGERPRINT}, not [/x]" in out.get()
