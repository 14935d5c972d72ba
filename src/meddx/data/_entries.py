"""The built-in catalogue entries and their sample counters.

Sources are the official public ones. Where a file is redistributed unchanged,
its published checksum (or the one of the unchanged copy) is pinned. Where the
public source needs a login (Kaggle) or meddx's layout is derived from it (the
resized COVID images, the MIT-BIH subset), the entry says how to get it and the
data set is read from a mirror folder instead.
"""

from __future__ import annotations

import json
from collections import Counter as _Tally
from pathlib import Path

from meddx.data.catalogue import DatasetSpec, Remote, register_counter, register_dataset, resolve_file

ZENODO_MEDMNIST = "https://zenodo.org/records/10519652/files"
MEDMNIST_CITATION = (
    "Yang J, Shi R, Wei D, et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D "
    "biomedical image classification. Scientific Data 10, 41 (2023)."
)
PHYSIONET_CITATION = (
    "Goldberger AL, et al. PhysioBank, PhysioToolkit, and PhysioNet. Circulation 101(23):e215-e220 (2000)."
)


def _tabular_counts(path: Path, target: str, **read_kw: object) -> dict[str, int]:
    import pandas as pd

    frame = pd.read_csv(path, **read_kw)
    counts = {"all": len(frame)}
    for value, n in sorted(frame[target].value_counts().items(), key=lambda kv: str(kv[0])):
        counts[f"{target}={value}"] = int(n)
    return counts


# --------------------------------------------------------------------------- images

@register_counter("medmnist")
def _count_medmnist(folder: Path) -> dict[str, int]:
    from meddx.data.readers import read

    sample = read(resolve_file(folder, "*mnist*.npz"), reader="npz")
    counts = sample.counts()
    for split, (_, labels) in sample.splits.items():
        for value, n in sorted(_Tally(labels.reshape(len(labels), -1)[:, 0].tolist()).items()):
            counts[f"{split}:label={value}"] = n
    return counts


CHEST_RADIOGRAPH = {"dicom_modalities": ["CR", "DX"], "body_parts": ["CHEST", "THORAX", "LUNG"],
                    "photometric": ["MONOCHROME1", "MONOCHROME2"], "channels": 1}
"""What a chest X-ray model reads (DICOM header fields; see meddx.trust.intended)."""
_MEDMNIST_INTENDED = {
    "pneumoniamnist": {
        **CHEST_RADIOGRAPH, "description": "paediatric frontal chest radiographs", "views": ["PA", "AP"],
        "population": {"age": "children aged 1-5 years", "sites": ["Guangzhou Women and Children's Medical Center"]},
    },
    "breastmnist": {
        "description": "breast ultrasound images", "dicom_modalities": ["US"], "body_parts": ["BREAST"],
        "channels": 1, "population": {"age": "women aged 25-75 years", "sites": ["Baheya Hospital, Cairo"]},
    },
}


for _name, _title, _classes, _md5, _task in (
    (
        "breastmnist",
        "BreastMNIST (MedMNIST v2): breast ultrasound, 28×28",
        {"0": "malignant", "1": "normal, benign"},
        "750601b1f35ba3300ea97c75c52ff8f6",
        "binary classification",
    ),
    (
        "pneumoniamnist",
        "PneumoniaMNIST (MedMNIST v2): paediatric chest X-ray, 28×28",
        {"0": "normal", "1": "pneumonia"},
        "28209eda62fecd6e6a2d98b1501bb15f",
        "binary classification",
    ),
):
    register_dataset(
        DatasetSpec(
            name=_name,
            title=_title,
            task=_task,
            modality="breast ultrasound" if _name == "breastmnist" else "chest X-ray",
            classes=_classes,
            splits="official train/val/test",
            group_by="official split (patient-level in the source data set)",
            licence="CC BY 4.0",
            citation=MEDMNIST_CITATION,
            homepage="https://medmnist.com/",
            remotes=(Remote(f"{ZENODO_MEDMNIST}/{_name}.npz?download=1", f"{_name}.npz", md5=_md5),),
            manifest_sha256={
                "breastmnist": "581705ada25dbe9389c6c69aaf93896ab643201b502dcb3b75fb58bfc1eef7be",
                "pneumoniamnist": "ab4104cff49df1ff7a5401fd1538b8d0b03c31dbafc2e3a8152c82a29b01e997",
            }[_name],
            counter="medmnist",
            notes="Mirror copies may be re-saved (labels (N,) instead of (N,1), reordered); "
            "split sizes and class counts equal the official file.",
            tags=("image", "medmnist", "2d"),
            intended_input=_MEDMNIST_INTENDED[_name],
        )
    )


@register_counter("brain-tumor")
def _count_brain_tumor(folder: Path) -> dict[str, int]:
    suffixes = {".jpg", ".jpeg", ".png"}
    yes = [p for p in (folder / "yes").iterdir() if p.suffix.lower() in suffixes]
    no = [p for p in (folder / "no").iterdir() if p.suffix.lower() in suffixes]
    return {"all": len(yes) + len(no), "label=yes": len(yes), "label=no": len(no)}


register_dataset(
    DatasetSpec(
        name="brain-tumor-mri-navoneel",
        title="Brain MRI Images for Brain Tumor Detection (N. Chakrabarty)",
        task="binary classification",
        modality="brain MRI slices (JPEG/PNG, mixed sizes and modes)",
        classes={"yes": "tumour", "no": "no tumour"},
        splits="none official: 5-fold cross-validation over near-duplicate groups",
        group_by="near-duplicate groups (normalised correlation > 0.95 at 64×64), see meddx.data.splits",
        licence="unknown (Kaggle) / carrier repository Apache-2.0",
        citation="Chakrabarty N. Brain MRI Images for Brain Tumor Detection. Kaggle (2019).",
        homepage="https://www.kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection",
        intended_input={"description": "axial brain MRI slices", "dicom_modalities": ["MR"],
                        "body_parts": ["BRAIN", "HEAD"]},
        remotes=(
            Remote(
                "https://github.com/MohamedAliHabib/Brain-Tumor-Detection/archive/"
                "30470ae8eb2e4a523df7dc45dd5323903cb98365.zip",
                "brain-tumor.zip",
                extract=True,
                strip_prefix="Brain-Tumor-Detection-30470ae8eb2e4a523df7dc45dd5323903cb98365/",
            ),
        ),
        manifest_sha256="17a2078596b06b571b38aaaffffb3126dc2436c10156de7cb0887ef48151cd33",
        counter="brain-tumor",
        notes="78 images have a near-duplicate in the set: split by group, never by image. "
        "The source publishes no checksum; meddx records SHA256SUMS at first download.",
        tags=("image", "mri", "2d", "small"),
    )
)


@register_counter("covid-cxr")
def _count_covid(folder: Path) -> dict[str, int]:
    import pandas as pd

    coco = json.loads((folder / "annotations_coco_max384.json").read_text(encoding="utf-8"))
    meta = pd.read_csv(folder / "metadata.csv")
    images = pd.DataFrame(coco["images"]).merge(
        meta, left_on="orig_file_name", right_on="filename", how="left"
    )
    on_disk = sum(1 for p in (folder / "images_max384").iterdir() if p.suffix.lower() == ".jpg")
    return {
        "images": on_disk,
        "patients": int(images["patientid"].nunique()),
        "boxes": len(coco["annotations"]),
        "images_joined_to_metadata": int(images["patientid"].notna().sum()),
    }


register_dataset(
    DatasetSpec(
        name="covid-cxr-ieee8023-lungbbox",
        title="COVID-19 chest X-ray collection (ieee8023) with lung bounding boxes",
        task="finding classification, lung box detection, image + clinical data fusion",
        modality="adult chest X-ray (greyscale JPEG, longest side ≤ 384) + clinical metadata",
        intended_input={**CHEST_RADIOGRAPH, "description": "adult chest radiographs", "views": ["PA", "AP"],
                        "population": {"age": "adults", "sites": ["published case reports, many hospitals"]}},
        classes={"COVID-19": "COVID-19 pneumonia", "other": "other findings (SARS, Pneumocystis, ...)"},
        splits="none official: split by patientid",
        group_by="patientid",
        licence="per image in metadata.csv (mostly CC BY-NC-SA / CC BY); boxes CC BY 4.0",
        citation="Cohen JP, Morrison P, Dao L, et al. COVID-19 Image Data Collection: Prospective "
        "Predictions Are the Future. MELBA (2020).",
        homepage="https://github.com/ieee8023/covid-chestxray-dataset",
        manual_download=(
            "images come from https://github.com/ieee8023/covid-chestxray-dataset and boxes from "
            "https://github.com/GeneralBlockchain/covid-19-chest-xray-lung-bounding-boxes-dataset; "
            "meddx's layout holds them resized to ≤ 384 px (images_max384/, annotations_coco_max384.json)"
        ),
        manifest_sha256="009fffa789373f76a94131afa5477974c10aa107736db49665930ee744596e36",
        counter="covid-cxr",
        tags=("image", "xray", "multimodal", "detection"),
    )
)


@register_counter("voc")
def _count_voc(folder: Path) -> dict[str, int]:
    counts = {}
    for split_file in sorted((folder / "ImageSets" / "Main").glob("*.txt")):
        lines = [ln for ln in split_file.read_text().splitlines() if ln.strip()]
        counts[split_file.stem] = len(lines)
    counts["images"] = sum(1 for _ in (folder / "JPEGImages").glob("*.jpg"))
    counts["annotations"] = sum(1 for _ in (folder / "Annotations").glob("*.xml"))
    return counts


register_dataset(
    DatasetSpec(
        name="bccd-blood-cell-detection",
        title="BCCD blood cell detection (Pascal VOC)",
        task="object detection (RBC, WBC, platelets)",
        modality="blood smear microscopy, 640×480 JPEG",
        classes={"RBC": "red blood cell", "WBC": "white blood cell", "Platelets": "platelet"},
        splits="ImageSets/Main: train, val, trainval, test",
        group_by="official split",
        licence="MIT",
        citation="Shenggan. BCCD Dataset. GitHub (2017).",
        homepage="https://github.com/Shenggan/BCCD_Dataset",
        remotes=(
            Remote(
                "https://github.com/Shenggan/BCCD_Dataset/archive/d272fb14cdff6e473fafeeeba32aba5f560e9e43.zip",
                "bccd.zip",
                extract=True,
                strip_prefix="BCCD_Dataset-d272fb14cdff6e473fafeeeba32aba5f560e9e43/BCCD/",
            ),
        ),
        manifest_sha256="cb898f60996551fb866a23449effcd0889f0353bc8ef2f29ade888dcd621c1ff",
        counter="voc",
        notes="RBC labelling is reported incomplete in the source.",
        tags=("image", "microscopy", "detection"),
    )
)


@register_counter("chase")
def _count_chase(folder: Path) -> dict[str, int]:
    images = sorted(folder.glob("Image_*[LR].jpg"))
    return {
        "images": len(images),
        "masks_1stHO": len(list(folder.glob("Image_*_1stHO.png"))),
        "masks_2ndHO": len(list(folder.glob("Image_*_2ndHO.png"))),
        "children": len({p.stem[:-1] for p in images}),
    }


register_dataset(
    DatasetSpec(
        name="chase-db1-retina-vessel-seg",
        title="CHASE_DB1 retinal vessel segmentation",
        task="binary segmentation (vessel / background)",
        modality="retinal fundus, 999×960 JPEG + two expert masks",
        classes={"1": "vessel", "0": "background"},
        splits="none official; common: first 20 images train, last 8 test (by child)",
        group_by="child (both eyes of one child stay together)",
        licence="CC BY 4.0",
        citation="Fraz MM, et al. An ensemble classification-based approach applied to retinal blood "
        "vessel segmentation. IEEE TBME 59(9) (2012).",
        homepage="https://researchdata.kingston.ac.uk/96/",
        remotes=(Remote("https://researchdata.kingston.ac.uk/96/1/CHASEDB1.zip", "CHASEDB1.zip", extract=True),),
        manifest_sha256="9f7af968ee50cccd30690cfcbbb6c678b8ad933fae7bc8f750aba8bf6eea376a",
        counter="chase",
        tags=("image", "retina", "segmentation"),
    )
)

# --------------------------------------------------------------------------- signals

MITBIH_RECORDS = ("100", "102", "104", "105", "106", "108", "114", "116", "119", "121", "123", "200")
_BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


@register_counter("mitbih")
def _count_mitbih(folder: Path) -> dict[str, int]:
    import numpy as np

    beats = pvc = records = 0
    subset = folder / "tpcp_subset"
    if subset.is_dir():
        for rec in MITBIH_RECORDS:
            with np.load(subset / f"{rec}.npz", allow_pickle=False) as data:
                beats += len(data["r_peaks"])
                pvc += int(np.asarray(data["is_pvc"]).sum())
            records += 1
    else:  # downloaded from PhysioNet: raw WFDB records
        import wfdb

        for rec in MITBIH_RECORDS:
            ann = wfdb.rdann(str(folder / "records" / rec), "atr")
            symbols = [s for s in ann.symbol if s in _BEAT_SYMBOLS]
            beats += len(symbols)
            pvc += sum(s == "V" for s in symbols)
            records += 1
    return {"records": records, "beats": beats, "beats:pvc": pvc, "beats:other": beats - pvc}


register_dataset(
    DatasetSpec(
        name="ecg-mitbih-arrhythmia",
        title="MIT-BIH Arrhythmia Database (12-record subset, lead MLII)",
        task="beat classification (PVC vs other), R-peak detection, streaming",
        modality="Holter ECG, 360 Hz, mV",
        classes={"V": "premature ventricular contraction", "other": "any other beat"},
        splits="none official: split by record (patient), never by beat",
        group_by="record",
        licence="ODC-By 1.0",
        citation="Moody GB, Mark RG. The impact of the MIT-BIH Arrhythmia Database. "
        "IEEE Eng Med Biol 20(3):45-50 (2001). " + PHYSIONET_CITATION,
        homepage="https://physionet.org/content/mitdb/1.0.0/",
        remotes=tuple(
            Remote(f"https://physionet.org/files/mitdb/1.0.0/{rec}.{ext}", f"records/{rec}.{ext}")
            for rec in MITBIH_RECORDS
            for ext in ("hea", "dat", "atr")
        ),
        manifest_sha256="715ac5426921c73dfa6a4fe24f985f0aab3109af246435a2eaa58fd76a097c75",
        counter="mitbih",
        notes="The mirror holds the records as npz (signal, r_peaks, is_pvc) plus raw WFDB record 100; "
        "a download fetches the raw WFDB records from PhysioNet.",
        tags=("signal", "ecg"),
    )
)


@register_counter("cinc2017")
def _count_cinc(folder: Path) -> dict[str, int]:
    import pandas as pd

    subset = folder / "REFERENCE-v3-subset.csv"
    if subset.is_file():
        ref = pd.read_csv(subset)
    else:
        ref = pd.read_csv(folder / "REFERENCE-v3.csv", header=None, names=["record", "label"])
    on_disk = {p.stem for p in (folder / "records").glob("*.hea")}
    counts = {"records": len(ref), "records_on_disk": len(on_disk & set(ref["record"]))}
    for label, n in sorted(ref["label"].value_counts().items()):
        counts[f"label={label}"] = int(n)
    return counts


register_dataset(
    DatasetSpec(
        name="ecg-cinc2017-af",
        title="PhysioNet/CinC Challenge 2017: AF classification from a short single-lead ECG",
        task="rhythm classification (N, A, O, ~)",
        modality="AliveCor single-lead ECG, 300 Hz",
        classes={"N": "normal", "A": "atrial fibrillation", "O": "other rhythm", "~": "noisy"},
        splits="none official in the subset: stratified by label, one record per patient",
        group_by="record",
        licence="ODC-By 1.0",
        citation="Clifford GD, et al. AF Classification from a Short Single Lead ECG Recording: the "
        "PhysioNet/Computing in Cardiology Challenge 2017. CinC 44 (2017). " + PHYSIONET_CITATION,
        homepage="https://physionet.org/content/challenge-2017/1.0.0/",
        remotes=(
            Remote(
                "https://physionet.org/files/challenge-2017/1.0.0/training2017.zip",
                "training2017.zip",
                extract=True,
                strip_prefix="training2017/",
                into="records",
            ),
            Remote("https://physionet.org/files/challenge-2017/1.0.0/REFERENCE-v3.csv", "REFERENCE-v3.csv"),
        ),
        manifest_sha256="eb92ddbf0faa26b22b5c0681b06acba2302a68c5c6b7d2f8b8d49259a637bca2",
        counter="cinc2017",
        notes="The mirror holds a 1,600-record stratified subset (seed 2017); a download fetches all 8,528.",
        tags=("signal", "ecg", "wearable"),
    )
)

_HEARTPY_RAW = "https://raw.githubusercontent.com/paulvangentcom/heartrate_analysis_python/master/heartpy/data"


@register_counter("ppg")
def _count_ppg(folder: Path) -> dict[str, int]:
    import pandas as pd

    return {
        "data.csv": len(pd.read_csv(folder / "data.csv", header=None)),
        "data2.csv": len(pd.read_csv(folder / "data2.csv")),
        "data3.csv": len(pd.read_csv(folder / "data3.csv")),
    }


register_dataset(
    DatasetSpec(
        name="ppg-heartpy",
        title="HeartPy example PPG recordings",
        task="heart-rate / peak detection on a stream (no labels)",
        modality="finger PPG, 100 Hz (data.csv); timer- and datetime-stamped HR streams",
        classes={},
        splits="none (unlabelled streams)",
        group_by="file",
        licence="GPL-3.0 (heartpy)",
        citation="van Gent P, et al. HeartPy: A novel heart rate algorithm for the analysis of noisy "
        "signals. Transportation Research Part F 66:368-378 (2019).",
        homepage="https://github.com/paulvangentcom/heartrate_analysis_python",
        remotes=(
            Remote(f"{_HEARTPY_RAW}/data.csv", "data.csv",
                   sha256="b06b8049008b3d9391cd2b9a3b90510b3734426b8833a6de7b7b323b4bda7179"),
            Remote(f"{_HEARTPY_RAW}/data2.csv", "data2.csv",
                   sha256="7d85f0d33b04395409e81d614b9bd82541208cc3edfbc5a49b5129ae3cb573b9"),
            Remote(f"{_HEARTPY_RAW}/data3.csv", "data3.csv",
                   sha256="16eedaa7c97c6ca873e7e424d27a84dcd043d4eca0e4f7611d2a37969192b7ea"),
        ),
        manifest_sha256="f26c3bf06c6cb6b841b4f276eba2ba7d35662e76c61db1e9443ac267a49eac85",
        counter="ppg",
        tags=("signal", "ppg", "stream"),
    )
)

_PYACTI_RAW = "https://raw.githubusercontent.com/ghammad/pyActigraphy/master/pyActigraphy/tests/data"
_ACTI_FILES = {
    "example_01.AWD": "7a18100d3c883049e0a8feda387859414b031b01cb129c74b749fd3f8dc13864",
    "example_02.AWD": "5392d264ad03cd932a51dca2cd65e8864c9ddfb05a4e3ec3c6428ae988baf5b0",
    "example_03.AWD": "765781ede2ccefd01b7e396ff09596caf780e939d32aa2e9c87f718ee87d79ca",
    "example_04.AWD": "f6d9f869f214b20b19a4a2718a1115aaa4ccc942fb46554ffd9a4509e2c2cc30",
    "example_05.AWD": "0c728a780b2f5ac9ac3ed7a25b445485231452098bcaaf67e78458016c21fa24",
    "test_sample_rpx_eng.csv": "2162244f0236ba450bb244fac0e4421f1b639af272ef299f7090367bb434b66b",
    "sample-timeSeries.csv.gz": "69a8b409dc58c932a04cbd6f861559256441a51d5fbe9fde58820411c84fccb1",
}


@register_counter("actigraphy")
def _count_actigraphy(folder: Path) -> dict[str, int]:
    import pandas as pd

    counts: dict[str, int] = {}
    for awd in sorted(folder.glob("*.AWD")):
        lines = awd.read_text(encoding="latin-1").splitlines()
        counts[f"{awd.name}:epochs"] = sum(1 for ln in lines[7:] if ln.strip())
    rpx = folder / "test_sample_rpx_eng.csv"
    if rpx.is_file():
        lines = rpx.read_text(encoding="utf-8-sig", errors="replace").splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.startswith('"Line","Date","Time","Activity"'))
        counts[f"{rpx.name}:epochs"] = sum(1 for ln in lines[start + 1:] if ln.strip())
    ukb = folder / "sample-timeSeries.csv.gz"
    if ukb.is_file():
        counts[f"{ukb.name}:epochs"] = len(pd.read_csv(ukb))
    return counts


register_dataset(
    DatasetSpec(
        name="actigraphy-pyactigraphy-samples",
        title="pyActigraphy example recordings (Actiwatch, Actiware, ActiGraph, UK Biobank tool)",
        task="sleep/wake and activity classification, circadian metrics",
        modality="wrist actigraphy",
        classes={"1": "sleep (device-scored)", "0": "wake (device-scored)"},
        splits="none: one recording per subject",
        group_by="recording",
        licence="GPL-3.0 (pyActigraphy)",
        citation="Hammad G, et al. pyActigraphy: Open-source python package for actigraphy data "
        "visualization and analysis. PLoS Comput Biol 17(10):e1009514 (2021).",
        homepage="https://github.com/ghammad/pyActigraphy",
        remotes=tuple(Remote(f"{_PYACTI_RAW}/{n}", n, sha256=h) for n, h in _ACTI_FILES.items()),
        manifest_sha256="423aad50bdbaea710cd145a2f2736081560495f0774edbadce64d2a467da190d",
        counter="actigraphy",
        notes="Sleep/Wake labels are scored by device software, not polysomnography.",
        tags=("signal", "actigraphy", "sleep"),
    )
)

# --------------------------------------------------------------------------- tables


@register_counter("heart-disease")
def _count_heart_disease(folder: Path) -> dict[str, int]:
    import pandas as pd

    path = resolve_file(folder, "heart_disease*.csv")
    counts = _tabular_counts(path, "num")
    for site, n in pd.read_csv(path)["dataset"].value_counts().sort_index().items():
        counts[f"site={site}"] = int(n)
    return counts


_TABLES = (
    (
        "heart-disease-uci", "UCI Heart Disease (Cleveland + Hungary)", "heart-disease",
        "classification of `num` (0 = no disease, 1-4), or binary num > 0",
        {"0": "no disease", "1-4": "disease severity"}, "CC BY 4.0",
        "Janosi A, Steinbrunn W, Pfisterer M, Detrano R. Heart Disease. UCI Machine Learning "
        "Repository (1988). https://doi.org/10.24432/C52P4X",
        "https://archive.ics.uci.edu/dataset/45/heart+disease",
        "e8f5f768f116d506bfa1d05ad2f06c9753df486184234cfa75940d435154463d",
        "site (Cleveland / Hungary); Switzerland and VA are kept apart for external validation",
        (), "the 920-row merge of the four UCI sites is on Kaggle (redwankarimsony/heart-disease-data); "
        "meddx keeps the Cleveland and Hungary rows",
    ),
    (
        "heart-failure-clinical-records", "Heart failure clinical records", "heart-failure",
        "classification / survival of DEATH_EVENT with follow-up `time`",
        {"0": "survived follow-up", "1": "died during follow-up"}, "CC BY 4.0",
        "Chicco D, Jurman G. Machine learning can predict survival of patients with heart failure from "
        "serum creatinine and ejection fraction alone. BMC Med Inform Decis Mak 20, 16 (2020).",
        "https://archive.ics.uci.edu/dataset/519/heart+failure+clinical+records",
        "40068a700d61764137aeafff6e195d4300cf023e0d4eb5c42fde11ceb487f3ef", "patient (one row each)",
        (Remote("https://archive.ics.uci.edu/ml/machine-learning-databases/00519/"
                "heart_failure_clinical_records_dataset.csv", "heart_failure_clinical_records_dataset.csv",
                sha256="88e2fa1e0ee29e88a515e3034da1ef9a6266fb3dd7a1c85fcdf3223069207f0d"),), None,
    ),
    (
        "pima-indians-diabetes", "Pima Indians Diabetes", "pima",
        "classification of Outcome (diabetes within 5 years)", {"0": "no diabetes", "1": "diabetes"},
        "public (NIDDK); listed CC0 on Kaggle",
        "Smith JW, et al. Using the ADAP learning algorithm to forecast the onset of diabetes mellitus. "
        "Proc Annu Symp Comput Appl Med Care, 261-265 (1988).",
        "https://www.kaggle.com/datasets/uciml/pima-indians-diabetes-database",
        "c789037a8dd94811ad033bb72f7ddfab7bd8acd3f3fd6cf13f235b34b1cc5f21", "patient (one row each)",
        (), "Kaggle (login required): uciml/pima-indians-diabetes-database, file diabetes.csv",
    ),
    (
        "breast-cancer-wisconsin-diagnostic", "Breast Cancer Wisconsin (Diagnostic)", "wdbc",
        "classification malignant vs benign from 30 FNA cytology features",
        {"0": "malignant", "1": "benign"}, "CC BY 4.0",
        "Wolberg W, Mangasarian O, Street N, Street W. Breast Cancer Wisconsin (Diagnostic). UCI "
        "Machine Learning Repository (1993). https://doi.org/10.24432/C5DW2B",
        "https://archive.ics.uci.edu/dataset/17/breast+cancer+wisconsin+diagnostic",
        "a31dac8ec54cfcd44014fbde4fb41b81f9220ce4dcc6e4122ababf1b5ec02c31", "patient (one row each)",
        (Remote("https://raw.githubusercontent.com/scikit-learn/scikit-learn/1.9.1/sklearn/datasets/data/"
                "breast_cancer.csv", "breast_cancer_sklearn.csv",
                sha256="fed3eb72d0575ef6192293f5093c6e801b1476b577d0386bf4455504522172ed"),), None,
    ),
    (
        "stroke-kaggle", "Stroke Prediction Dataset (fedesoriano, Kaggle)", "stroke",
        "classification of stroke (very imbalanced)", {"0": "no stroke", "1": "stroke"},
        "unclear (origin not documented); use for demos only",
        "fedesoriano. Stroke Prediction Dataset. Kaggle (2021).",
        "https://www.kaggle.com/datasets/fedesoriano/stroke-prediction-dataset",
        "faf49d904e6dac7e6940bf53e035ad494ac886064ca0a4dbd9f87a58d45466c6", "patient (one row each)",
        (), "Kaggle (login required): fedesoriano/stroke-prediction-dataset",
    ),
)


@register_counter("heart-failure")
def _count_heart_failure(folder: Path) -> dict[str, int]:
    return _tabular_counts(resolve_file(folder, "heart_failure*.csv"), "DEATH_EVENT")


@register_counter("pima")
def _count_pima(folder: Path) -> dict[str, int]:
    return _tabular_counts(resolve_file(folder, "diabetes*.csv"), "Outcome")


@register_counter("wdbc")
def _count_wdbc(folder: Path) -> dict[str, int]:
    # scikit-learn's file: a first line "569,30,malignant,benign", then 30 features + target.
    counts = _tabular_counts(resolve_file(folder, "breast_cancer*.csv"), "target", skiprows=1, header=None,
                             names=[*(f"f{i}" for i in range(30)), "target"])
    return counts


@register_counter("stroke")
def _count_stroke(folder: Path) -> dict[str, int]:
    return _tabular_counts(resolve_file(folder, "*stroke*.csv"), "stroke")


for (_name, _title, _counter, _task, _classes, _licence, _citation, _home, _manifest, _group, _remotes,
     _manual) in _TABLES:
    register_dataset(
        DatasetSpec(
            name=_name, title=_title, task=_task, modality="clinical tabular", classes=_classes,
            splits="none official: stratified k-fold by patient", group_by=_group, licence=_licence,
            citation=_citation, homepage=_home, remotes=_remotes, manual_download=_manual,
            manifest_sha256=_manifest, counter=_counter, tags=("table",),
        )
    )

# --------------------------------------------------------------------------- format samples


@register_counter("format-samples")
def _count_format_samples(folder: Path) -> dict[str, int]:
    counts = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        counts[sub.name] = sum(1 for p in sub.rglob("*") if p.is_file() and not p.name.endswith(".txt"))
    return counts


register_dataset(
    DatasetSpec(
        name="format-samples",
        title="Format samples: DICOM, NIfTI, EDF/EDF+, WFDB, HL7 v2, FHIR R4",
        task="ingestion / parser tests",
        modality="mixed",
        classes={},
        splits="none",
        group_by="file",
        licence="pydicom MIT, pydicom-data MIT, nibabel MIT, wfdb-python MIT (PhysioNet data ODC-By), "
        "pyedflib BSD, CDCgov/trusted-intermediary Apache-2.0",
        citation="Test files shipped with pydicom, pydicom-data, nibabel, wfdb-python, pyedflib and "
        "CDCgov/trusted-intermediary.",
        homepage="https://github.com/pydicom/pydicom",
        manual_download="the files come from the test data of several packages (see the mirror's README)",
        manifest_sha256="cd612bca772b59c73afbe8e0e921174c3fb919e49ed24a192056dfd7484b2a44",
        counter="format-samples",
        tags=("formats",),
    )
)
