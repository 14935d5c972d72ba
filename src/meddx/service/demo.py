"""``python -m meddx.service.demo``: what ``make demo`` runs before serving.

1. trains the demo models from the data mirror once (cached in ``$MEDDX_HOME/demo``):
   a chest X-ray pneumonia model (PneumoniaMNIST) and a breast ultrasound model
   (BreastMNIST, a 5-seed ensemble: the small-ensemble default), cnn-small with their trust layer (calibration, conformal
   sets, abstention); prints their test metrics with 95% CIs and registers them;
2. creates the administrator account ``admin`` (or gives it a new one-time
   password when it exists) and prints that password once.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

DEMO_MODELS = {  # data set -> training options
    "pneumoniamnist": {"epochs": 8, "lr": 3e-3},
    "breastmnist": {"epochs": 40, "lr": 3e-3},  # the default small-ensemble recipe: 5 seeds
}
DEMO_NAMES = {  # data set -> the package name `make demo` serves (the Makefile lists the same)
    "pneumoniamnist": "pneumoniamnist-cnn-small",
    "breastmnist": "breastmnist-cnn-small-ensemble5",
}


def prepare_models(home: Path) -> list[str]:
    from meddx.data.datasets import load_images
    from meddx.evaluation.report import evaluate_model, recorded_metrics
    from meddx.inference import Pipeline
    from meddx.packaging.card import write_card
    from meddx.packaging.registry import register
    from meddx.training import TrainConfig, train

    names = []
    for data, options in DEMO_MODELS.items():
        run = home / "demo" / f"{data}-cnn-small"
        cached = json.loads((run / "package.json").read_text()) if (run / "package.json").is_file() else {}
        if "trust" not in cached or cached.get("name") != DEMO_NAMES[data]:  # absent, unfinished or an old recipe
            print(f"training the {data} demo model (once; cached in {run})", flush=True)
            shutil.rmtree(run, ignore_errors=True)  # no file of an older recipe may stay beside the new package
            train(TrainConfig(data=data, model="cnn-small", seed=0, out=str(run), **options), progress=False)
        package = json.loads((run / "package.json").read_text())
        if "metrics" not in package:
            pipe = Pipeline.load(run)
            images, labels = load_images(data).splits["test"]
            result = evaluate_model(pipe, images, labels, n_boot=500, data=data, split="test")
            package["metrics"] = recorded_metrics(result)
            (run / "package.json").write_text(json.dumps(package, indent=2), encoding="utf-8")
            write_card(run, package)
        values = package["metrics"]["values"]
        print(f"{package['name']}: test ACC {values['acc']['value']:.3f} "
              f"[{values['acc']['low']:.3f}–{values['acc']['high']:.3f}], AUC {values['auc']['value']:.3f} "
              f"[{values['auc']['low']:.3f}–{values['auc']['high']:.3f}]", flush=True)
        register(run)
        names.append(package["name"])
    return names


def admin_account(username: str = "admin") -> str:
    """Create ``username`` as admin, or give it a fresh one-time password; return that password."""
    from meddx.storage.db import database_url, make_engine, session_factory, upgrade
    from meddx.storage.models import User
    from meddx.storage.users import create_user, reset_password

    url = database_url()
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            user = session.query(User).filter_by(username=username).one_or_none()
            if user is None:
                _, password = create_user(session, username, "admin")
            else:
                password = reset_password(session, user)
            session.commit()
            return str(password)
    finally:
        engine.dispose()


def main() -> int:
    from meddx.config import home_dir

    home = home_dir()
    names = prepare_models(home)
    password = admin_account()
    print("\n" + "=" * 72)
    print("meddx is ready. Open http://127.0.0.1:8000/ and log in as:")
    print("    username: admin")
    print(f"    one-time password: {password}")
    print("(the page then asks you to choose your own password, 12 characters or more)")
    print(f"Models: {', '.join(names)}. A DICOM to try: ../shared/data/format-samples/dicom/")
    print("=" * 72 + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
