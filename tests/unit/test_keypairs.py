"""Key pairs: what is accepted as a public key, and generated pairs that OpenSSH's own
ssh-keygen reads back (same public key, same fingerprint)."""

import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nubis.services.compute.keypairs import generate, parse_public_key
from nubis.services.core.errors import BadRequest


def ssh_keygen(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["ssh-keygen", *args], input=stdin, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
def test_generated_pairs_are_real_openssh_keys(tmp_path, key_type):
    private, public = generate(key_type, "laptop")
    key_file = tmp_path / "id"
    key_file.write_text(private)
    key_file.chmod(0o600)
    # ssh-keygen derives the same public key from the private one
    derived = ssh_keygen("-y", "-f", str(key_file)).split()
    assert derived[:2] == public.split()[:2]
    parsed = parse_public_key(public)
    assert parsed.key_type == ("ssh-ed25519" if key_type == "ed25519" else "ssh-rsa")
    # and prints the fingerprint we store
    pub_file = tmp_path / "id.pub"
    pub_file.write_text(public + "\n")
    assert ssh_keygen("-l", "-E", "sha256", "-f", str(pub_file)).split()[1] == parsed.fingerprint


def test_an_imported_key_is_normalised_to_one_line():
    _, public = generate("ed25519", "me@example")
    kind, blob, comment = public.split()
    parsed = parse_public_key(f"  {kind}   {blob}  {comment}\n")
    assert parsed.line == f"{kind} {blob} {comment}"


def small_rsa_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must be an OpenSSH public key"),
        ("ssh-ed25519", "must be '<type> <base64 key>"),
        ("ssh-ed25519 AAAA!!notbase64", "not a valid OpenSSH public key"),
        ("hello world", "unknown key type 'hello'"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB", "not a valid OpenSSH public key"),
        ("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----", "one line"),
        ("ssh-ed25519 " + "A" * 20000, "longer than"),
    ],
)
def test_malformed_keys_are_refused(text, message):
    with pytest.raises(BadRequest, match=message):
        parse_public_key(text)


def test_weak_rsa_keys_are_refused():
    with pytest.raises(BadRequest, match="at least 2048 bits"):
        parse_public_key(small_rsa_key())


def test_a_key_type_nubis_cannot_generate_is_refused():
    with pytest.raises(BadRequest, match="key_type must be one of"):
        generate("dsa", "x")
