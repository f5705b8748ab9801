"""Whether W&B would find credentials for an online run on this machine, looked up where wandb looks,
without the network, without a prompt, and without ever returning or printing the key.

wandb 0.31 (wandb/sdk/lib/wbauth/authenticate.py `_use_system_auth`, wbnetrc.py) takes the first of:

    1. the WANDB_API_KEY environment variable, or WANDB_IDENTITY_TOKEN_FILE (federated identity);
    2. the netrc file ($NETRC, else ~/.netrc, else ~/_netrc): the password of the entry for the host
       of the W&B server URL (WANDB_BASE_URL, else `base_url` in W&B's settings file, else the W&B
       cloud; `wandb login --host URL` writes that setting and that entry), or of the file's
       `default` entry. The cloud's URL is https://api.forge.coreweave.com in wandb 0.31, whose
       entry wandb looks for first, then api.wandb.ai's (the cloud's URL in earlier versions);
    3. `api_key` in W&B's settings file ($WANDB_CONFIG_DIR/settings, else ~/.config/wandb/settings,
       section [default]).

With none of them and no terminal to prompt on, `wandb.init(mode="online")` raises `UsageError: No
API key configured` (in every trial of a study). wandb's public `wandb.login(prompt=False,
verify=False)` answers the same question, but when it finds a key it asks the server who is logged
in (to print it), rewrites the settings file and keeps the key in the process's session; so the
same sources are read here with the standard library (the same `netrc` parser wandb uses). Not
read: a workspace settings file (./wandb/settings, from `wandb init`); a key kept only there is
refused, and WANDB_API_KEY always works. The key's format is not checked (wandb 0.31 wants at least
40 characters after an optional `prefix-`).

    python -m pytest tests/test_wandb_key.py
"""
from __future__ import annotations

import configparser
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://api.forge.coreweave.com"   # wandb 0.31's wandb.sdk.lib.urls
# The netrc entries wandb reads for a CoreWeave Forge URL: its API host's, then the W&B API host's
# behind it (wandb.sdk.lib.urls FORGE_HOSTS, forge_upstream_url).
FORGE = {"api.forge.coreweave.com": ("api.forge.coreweave.com", "api.wandb.ai"),
         "api.qa.forge.coreweave.com": ("api.qa.forge.coreweave.com", "api.qa.wandb.ai")}
FORGE.update({host.removeprefix("api."): machines for host, machines in FORGE.items()})


def missing_key(mode: str, env: Mapping[str, str] = os.environ, offline_ok: bool = True) -> str | None:
    """None unless `mode` is 'online' and wandb would find no credentials here; then the one-line
    reason (what is missing, where it was looked for, what to do; `offline_ok`: offering offline
    mode too). Never names any part of a key."""
    if mode != "online" or credentials_source(env) is not None:
        return None
    return (f"wandb.mode: 'online' needs a W&B API key, and none is set (no WANDB_API_KEY, no entry "
            f"for {' or '.join(netrc_machines(env))} in {netrc_path(env)}); set WANDB_API_KEY or run "
            "`wandb login`"
            + ", or use --wandb-mode offline" * offline_ok)


def credentials_source(env: Mapping[str, str] = os.environ) -> str | None:
    """Where wandb would take its credentials from: an environment variable's name or a file's
    path; None if from nowhere."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if env.get(name):
            return name
    path = netrc_path(env)
    if netrc_has_key(path, netrc_machines(env)):
        return str(path)
    if settings(env).get("api_key"):
        return str(settings_path(env))
    return None


def home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def settings_path(env: Mapping[str, str]) -> Path:
    if env.get("WANDB_CONFIG_DIR"):
        return Path(env["WANDB_CONFIG_DIR"]).expanduser() / "settings"
    return home(env) / ".config" / "wandb" / "settings"


def settings(env: Mapping[str, str]) -> dict[str, str]:
    """W&B's settings file's [default] section; empty when the file is missing or unreadable (as
    wandb treats it)."""
    parser = configparser.ConfigParser()
    try:
        parser.read(settings_path(env))
        return dict(parser.items("default"))
    except (OSError, configparser.Error):
        return {}


def netrc_machines(env: Mapping[str, str]) -> tuple[str, ...]:
    """The netrc machine names (host, or host:port) whose entry wandb takes for the W&B server."""
    url = env.get("WANDB_BASE_URL") or settings(env).get("base_url") or DEFAULT_BASE_URL
    parts = urlsplit(url.strip())
    return FORGE.get(parts.hostname or "", (parts.netloc,))


def netrc_path(env: Mapping[str, str]) -> Path:
    """The netrc file wandb reads: $NETRC, else ~/.netrc or ~/_netrc, whichever exists first."""
    if env.get("NETRC"):
        return Path(env["NETRC"]).expanduser()
    for name in (".netrc", "_netrc"):
        if (home(env) / name).exists():
            return home(env) / name
    return home(env) / ".netrc"


def netrc_has_key(path: Path, machines: tuple[str, ...]) -> bool:
    """Whether the netrc file has a password for the first of `machines` it has an entry for (or
    a `default` entry with one). A file that is missing or does not parse has none: wandb warns
    and goes on without it."""
    try:
        entries = netrc.netrc(str(path))
    except (OSError, netrc.NetrcParseError):
        return False
    entry = next(filter(None, (entries.authenticators(m) for m in machines if m)), None)
    return bool(entry and entry[2])
