

def test_segmentation_and_detection_cards_describe_their_outputs_not_a_classifiers() -> None:
    from meddx.packaging.card import render_card

    seg = render_card({"name": "v", "task": "segmentation", "class_names": ["background", "vessel"],
                       "preprocess": {"method": "green-clahe", "patch": 96}})
    assert "a class per pixel" in seg and "(softmax)" not in seg
    assert "still gets one of them" not in seg and "are segmented" in seg
    assert "- method: green-clahe" in seg and "--slice N" not in seg
    det = render_card({"name": "d", "task": "detection", "class_names": ["RBC", "WBC"]})
    assert "labelled boxes with scores" in det and "are detected" in det
    clf = render_card({"name": "c", "task": "binary classification", "num_classes": 2, "class_names": ["a", "b"]})
    assert "2 outputs (softmax)" in clf and "still gets one of them" in clf
