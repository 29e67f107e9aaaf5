"""Hand-worked checks of clipcl_runner.metrics (expected numbers derived in comments)."""

import json
import math

import numpy as np
import pytest

from clipcl_runner import metrics as M

# Rows = after stage t, columns = test set of stage i.
ACC3 = np.array(
    [
        [90.0, 10.0, 20.0],
        [70.0, 80.0, 30.0],
        [60.0, 75.0, 85.0],
    ]
)
ZS = np.array([50.0, 40.0, 30.0])  # zero-shot row for ACC3
ACC2 = np.array([[80.0, 20.0], [60.0, 90.0]])
ACC1 = np.array([[70.0]])


def approx(x):
    return pytest.approx(x, abs=1e-9, nan_ok=True)


# ---------------------------------------------------------------- matrix_rows
def test_matrix_rows_split_and_validation():
    zs, a = M.matrix_rows(np.vstack([ZS, ACC3]), has_zero_shot_row=True)
    assert zs.tolist() == ZS.tolist()
    assert a.tolist() == ACC3.tolist()
    zs, a = M.matrix_rows(ACC3)
    assert zs is None and a.shape == (3, 3)
    with pytest.raises(ValueError):  # (T+1, T) without saying it has a zero-shot row
        M.matrix_rows(np.vstack([ZS, ACC3]))
    with pytest.raises(ValueError):
        M.matrix_rows(np.zeros(3))


# ---------------------------------------------------------------- ut_acc
def test_ut_acc():
    # t=0: 90; t=1: (70+80)/2 = 75; t=2: (60+75+85)/3 = 73.333...
    assert M.ut_acc(ACC3).tolist() == approx([90.0, 75.0, 220.0 / 3])
    assert M.ut_acc(np.vstack([ZS, ACC3]), has_zero_shot_row=True).tolist() == approx([90.0, 75.0, 220.0 / 3])
    # T=2: [80, (60+90)/2 = 75]; T=1: [70]
    assert M.ut_acc(ACC2).tolist() == approx([80.0, 75.0])
    assert M.ut_acc(ACC1).tolist() == approx([70.0])


# ---------------------------------------------------------------- bwt
def test_bwt_standard_and_paper():
    # standard: t=0 NaN; t=1: (70-90)/1 = -20; t=2: ((60-90)+(75-80))/2 = -17.5
    std = M.bwt(ACC3)
    assert math.isnan(std[0])
    assert std[1:].tolist() == approx([-20.0, -17.5])
    # paper (/(t+1)): t=0: 0; t=1: -20/2 = -10; t=2: -35/3 = -11.666...
    assert M.bwt(ACC3, "paper").tolist() == approx([0.0, -10.0, -35.0 / 3])
    # zero-shot row is ignored
    zs_std = M.bwt(np.vstack([ZS, ACC3]), has_zero_shot_row=True)
    assert zs_std[1:].tolist() == approx([-20.0, -17.5])
    # T=2: standard [NaN, 60-80 = -20]; paper [0, -20/2 = -10]
    assert M.bwt(ACC2)[1] == approx(-20.0)
    assert M.bwt(ACC2, "paper").tolist() == approx([0.0, -10.0])
    # T=1 (MST stage 0): standard NaN, paper 0
    assert math.isnan(M.bwt(ACC1)[0])
    assert M.bwt(ACC1, variant="paper").tolist() == [0.0]
    with pytest.raises(ValueError):
        M.bwt(ACC3, "gem")


def test_final_bwt():
    assert M.final_bwt(ACC3) == approx(-17.5)  # ((60-90)+(75-80))/2
    assert M.final_bwt(np.vstack([ZS, ACC3]), has_zero_shot_row=True) == approx(-17.5)
    assert M.final_bwt(ACC2) == approx(-20.0)  # 60-80
    assert math.isnan(M.final_bwt(ACC1))


# ---------------------------------------------------------------- forgetting
def test_forgetting():
    # i=0: max(90,70)-60 = 30; i=1: max(10,80)-75 = 5 -> 17.5
    assert M.forgetting(ACC3) == approx(17.5)
    # a zero-shot value above every trained one must not enter the max
    zs_high = np.array([99.0, 99.0, 99.0])
    assert M.forgetting(np.vstack([zs_high, ACC3]), has_zero_shot_row=True) == approx(17.5)
    assert M.forgetting(ACC2) == approx(20.0)  # 80-60
    assert math.isnan(M.forgetting(ACC1))
    # the max runs over all earlier rows, also those before the task was learned:
    # column 1 -> max(95, 80) - 75 = 20; column 0 -> 90-60 = 30 -> 25
    a = ACC3.copy()
    a[0, 1] = 95.0
    assert M.forgetting(a) == approx(25.0)


# ---------------------------------------------------------------- mtil_summary
def test_mtil_summary_3x3():
    s = M.mtil_summary(ACC3)
    assert set(s) == {"transfer", "avg", "last", "bwt", "forgetting"}
    # transfer: i=1 -> a[0][1] = 10; i=2 -> (20+30)/2 = 25; mean = 17.5
    assert s["transfer"] == approx(17.5)
    # avg: columns (90+70+60)/3 = 73.33, (10+80+75)/3 = 55, (20+30+85)/3 = 45 -> 57.777...
    assert s["avg"] == approx((220.0 / 3 + 55.0 + 45.0) / 3)
    assert s["last"] == approx(220.0 / 3)  # (60+75+85)/3
    assert s["bwt"] == approx(-17.5)
    assert s["forgetting"] == approx(17.5)


def test_mtil_summary_zero_shot_row_does_not_change_metrics():
    ref = M.mtil_summary(ACC3)
    for s in (
        M.mtil_summary(ACC3, zero_shot_row=ZS),
        M.mtil_summary(np.vstack([ZS, ACC3]), has_zero_shot_row=True),
    ):
        for k, v in ref.items():
            assert s[k] == approx(v)
        assert s["zero_shot_transfer"] == approx(35.0)  # (40+30)/2
        assert s["zero_shot_avg"] == approx(40.0)  # (50+40+30)/3
    with pytest.raises(ValueError):
        M.mtil_summary(ACC3, zero_shot_row=ZS[:2])
    with pytest.raises(ValueError):
        M.mtil_summary(np.vstack([ZS, ACC3]), ZS, has_zero_shot_row=True)


def test_mtil_summary_t2_t1():
    s = M.mtil_summary(ACC2)
    # transfer a[0][1] = 20; avg ((80+60)/2 + (20+90)/2)/2 = (70+55)/2 = 62.5; last (60+90)/2
    assert s["transfer"] == approx(20.0)
    assert s["avg"] == approx(62.5)
    assert s["last"] == approx(75.0)
    assert s["bwt"] == approx(-20.0)
    assert s["forgetting"] == approx(20.0)
    s1 = M.mtil_summary(ACC1)
    assert math.isnan(s1["transfer"]) and math.isnan(s1["bwt"]) and math.isnan(s1["forgetting"])
    assert s1["avg"] == approx(70.0) and s1["last"] == approx(70.0)


def test_nan_entries_are_ignored():
    # future tasks not evaluated (upper triangle NaN)
    a = ACC3.copy()
    a[0, 1] = a[0, 2] = a[1, 2] = np.nan
    s = M.mtil_summary(a)
    assert math.isnan(s["transfer"])  # nothing evaluated before it was learned
    # avg: (90+70+60)/3 = 73.33, (80+75)/2 = 77.5, 85 -> (73.33+77.5+85)/3
    assert s["avg"] == approx((220.0 / 3 + 77.5 + 85.0) / 3)
    # forgetting: i=0 90-60 = 30; i=1 max(NaN, 80)-75 = 5 -> 17.5
    assert s["forgetting"] == approx(17.5)
    assert M.ut_acc(a).tolist() == approx([90.0, 75.0, 220.0 / 3])
    # one missing difference: a[2][1] missing -> standard BWT_2 = (60-90)/1 = -30,
    # paper = -30 * 2/3 = -20
    b = ACC3.copy()
    b[2, 1] = np.nan
    assert M.bwt(b)[2] == approx(-30.0)
    assert M.bwt(b, "paper")[2] == approx(-20.0)


# ---------------------------------------------------------------- cil / a_acc
def test_cil_summary():
    s = M.cil_summary([90.0, 80.0, 70.0, 40.0])
    assert s == {"avg": approx(70.0), "last": approx(40.0)}  # (90+80+70+40)/4
    assert M.cil_summary([55.0]) == {"avg": 55.0, "last": 55.0}
    assert M.cil_summary([80.0, np.nan, 60.0])["avg"] == approx(70.0)
    e = M.cil_summary([])
    assert math.isnan(e["avg"]) and math.isnan(e["last"])


def test_a_acc():
    assert M.a_acc(80.0, 60.0) == approx(70.0)
    assert isinstance(M.a_acc(80.0, 60.0), float)
    assert M.a_acc(np.array([80.0, 90.0]), np.array([60.0, 50.0])).tolist() == [70.0, 70.0]


# ---------------------------------------------------------------- summarize
def test_summarize_keys_values_and_json():
    probes = {"zs_acc": 55.0, "coco_i2t_r1": 40.0, "flickr_t2i_r5": 80.0}
    probe_zs = {"zs_acc": 63.0, "coco_i2t_r1": 50.5}  # flickr missing -> no delta
    s = M.summarize(ACC3, ZS, probes, probe_zs)
    expected = {
        "ut_acc": 220.0 / 3,
        "bwt": -17.5,
        "bwt_paper": -35.0 / 3,
        "forgetting": 17.5,
        "transfer": 17.5,
        "avg": (220.0 / 3 + 55.0 + 45.0) / 3,
        "last": 220.0 / 3,
        "zero_shot_transfer": 35.0,
        "zero_shot_avg": 40.0,
        "zs_acc": 55.0,
        "coco_i2t_r1": 40.0,
        "flickr_t2i_r5": 80.0,
        "delta/zs_acc": -8.0,  # 55-63
        "delta/coco_i2t_r1": -10.5,  # 40-50.5
    }
    assert set(s) == set(expected)
    for k, v in expected.items():
        assert s[k] == approx(v), k
        assert type(s[k]) is float, k
    json.dumps(s)
    # zero-shot row inside the matrix gives the same summary
    assert M.summarize(np.vstack([ZS, ACC3]), None, probes, probe_zs, has_zero_shot_row=True) == s


def test_summarize_t1_and_no_probes():
    s = M.summarize(ACC1)
    assert set(s) == {"ut_acc", "bwt", "bwt_paper", "forgetting", "transfer", "avg", "last"}
    assert s["ut_acc"] == 70.0 and s["bwt_paper"] == 0.0
    assert math.isnan(s["bwt"]) and math.isnan(s["forgetting"]) and math.isnan(s["transfer"])
    with pytest.raises(ValueError):
        M.summarize(ACC1, probes={"avg": 1.0})


# -- the runner's accuracy matrix without pandas ------------------------------------------------------
def test_accuracy_matrix_writes_the_csv_pandas_writes_and_reads_back():
    pd = pytest.importorskip("pandas")
    from clipcl_runner.run_summary import accuracy_matrix

    rows = [
        {"stage": 0, "stage_name": "zero-shot", "task/T1/acc": 50.0, "task/T2/acc": 100 / 3},
        {"stage": 1, "stage_name": "after T1, first", "task/T1/acc": 87.5},  # a comma (quoted) and a NaN
        {"stage": 2, "stage_name": "after T2", "task/T1/acc": 0.1 + 0.2, "task/T2/acc": 12.0},
    ]
    matrix = accuracy_matrix(rows, ["T1", "T2"])
    frame = pd.DataFrame(
        [[50.0, 100 / 3], [87.5, np.nan], [0.1 + 0.2, 12.0]],
        index=["zero-shot", "after T1, first", "after T2"],
        columns=["T1", "T2"],
    )
    assert matrix.to_csv(index=True) == frame.to_csv(index=True)
    pd.testing.assert_frame_equal(matrix.to_pandas(), frame)
    assert np.array_equal(matrix.to_numpy(dtype=float, na_value=-1.0)[1], [87.5, -1.0])
    assert matrix.index.name is None and list(matrix.columns) == ["T1", "T2"]
