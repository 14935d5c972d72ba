"""What a newcomer does after `make demo`, scripted over HTTP: log in on the page, upload a DICOM, read the card.

    make demo > demo.log &          # wait for "Uvicorn running"
    python -m bench.demo_newcomer --log demo.log [--dicom PATH] [--base http://127.0.0.1:8000]

Prints each step and the seconds from the login page to the result card.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True, help="the output of `make demo` (holds the password)")
    parser.add_argument("--dicom", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/format-samples/dicom/CT_small.dcm")
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    args = parser.parse_args()
    import httpx

    password = re.search(r"one-time password: (\S+)", args.log.read_text()).group(1)
    started = time.perf_counter()
    with httpx.Client(base_url=args.base, timeout=60) as client:
        assert client.get("/api/health").json() == {"status": "ok"}
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        r = client.post("/login", data={"username": "admin", "password": password, "csrf": csrf})
        print("log in:", r.status_code, r.headers.get("location"))
        if r.headers.get("location") == "/password":  # first login: choose a password instead of the one-time one
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/password").text).group(1)
            chosen = "the newcomer's own passphrase"
            r = client.post("/password", data={"csrf": csrf, "current_password": password, "new_password": chosen,
                                               "confirm_password": chosen})
            print("new password:", r.status_code, r.headers.get("location"))
        page = client.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        model = re.findall(r'<option value="([^"]+)"', page.text)[0]
        with open(args.dicom, "rb") as fh:
            r = client.post("/upload", data={"csrf": csrf, "model": model},
                            files={"file": (args.dicom.name, fh, "application/dicom")})
        print("upload:", r.status_code, r.headers.get("location"), "model:", model)
        card = client.get(r.headers["location"])
        decision = re.search(r'id="decision"[^>]*>\s*(.*?)\s*</p>', card.text, re.S).group(1)
        print("result card:", card.status_code, "decision:", " ".join(decision.split()))
        print("overlay:", client.get(r.headers["location"] + "/overlay.png").status_code)
    print(f"seconds from the login page to the result: {time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    main()
