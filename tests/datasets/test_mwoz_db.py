"""The MultiWOZ databases normalised to DF-Net's KB-row forms."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping

import pytest

from mktod.datasets.base import DataPaths
from mktod.datasets.mwoz_db import (
    ATTRIBUTES,
    DOMAINS,
    load_db_records,
    normalise_value,
    read_dfnet_kb_rows,
    unmatched_kb_rows,
)
from mktod.errors import DataError

MakePaths = Callable[[Mapping[str, str]], DataPaths]  # the make_paths fixture of tests/datasets/conftest.py

RESTAURANTS: list[dict[str, object]] = [
    {
        "address": "12 St. Johns Street City Centre",
        "area": "centre",
        "food": "chinese",
        "id": "1",
        "introduction": "not a KB attribute",
        "location": [52.2, 0.1],
        "name": "Ugly Duckling",
        "postcode": "cb21tw",
        "pricerange": "expensive",
        "type": "restaurant",
    },
    {
        "address": "Regent Street City Centre",
        "area": "centre",
        "food": "north american",
        "name": "gourmet burger kitchen",
        "phone": "01223312598",
        "postcode": "cb21ab",
        "pricerange": "expensive",
        "type": "restaurant",
    },
]
HOTELS: list[dict[str, object]] = [
    {
        "address": "sleeperz hotel, station road",
        "area": "centre",
        "internet": "yes",
        "name": "rosa's bed and breakfast",
        "parking": "no",
        "phone": "01223512596",
        "postcode": "cb11su",
        "price": {"single": "40"},
        "pricerange": "cheap",
        "stars": "4",
        "type": "guesthouse",
    }
]
ATTRACTIONS: list[dict[str, object]] = [
    {
        "address": "gwydir street, no. 5 dale's brewery",
        "area": "centre",
        "entrance fee": "?",
        "name": "williams art and antiques",
        "openhours": "?",
        "phone": "01223311687",
        "postcode": "cb12lj",
        "pricerange": "?",
        "type": "museum",
    }
]


def db_files(
    restaurants: object = RESTAURANTS, hotels: object = HOTELS, attractions: object = ATTRACTIONS
) -> dict[str, str]:
    return {
        "mwoz/multiwoz_db/restaurant_db.json": json.dumps(restaurants),
        "mwoz/multiwoz_db/hotel_db.json": json.dumps(hotels),
        "mwoz/multiwoz_db/attraction_db.json": json.dumps(attractions),
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12 St. Johns Street City Centre", "12_st_._johns_street_city_centre"),
        ("rosa's bed and breakfast", "rosa_'_s_bed_and_breakfast"),
        ("the grafton centre, east road", "the_grafton_centre_,_east_road"),
        ("gwydir street, no. 5 dale's brewery", "gwydir_street_,_no._5_dale_'_s_brewery"),
        ("3.50 pounds", "3.50_pounds"),
        ("  Alpha-Milton   Guest House ", "alpha-milton_guest_house"),
        ("14 -16 Bridge Street", "14_-16_bridge_street"),
        ("centre", "centre"),
        ("", ""),
    ],
)
def test_normalise_value(text: str, expected: str) -> None:
    assert normalise_value(text) == expected


def test_normalise_value_can_keep_commas_attached() -> None:
    # DF-Net's hotel addresses kept the comma on the word before it.
    assert (
        normalise_value("sleeperz hotel, station road", split_commas=False) == "sleeperz_hotel,_station_road"
    )


def test_load_db_records_normalises_to_kb_row_forms(make_paths: MakePaths) -> None:
    records = load_db_records(make_paths(db_files()))
    assert [r.id for r in records] == [
        "restaurant/ugly_duckling",
        "restaurant/gourmet_burger_kitchen",
        "hotel/rosa_'_s_bed_and_breakfast",
        "attraction/williams_art_and_antiques",
    ]
    duckling, burger, rosa, williams = records
    # No phone in the DB: the attribute is left out, as in DF-Net's row for this restaurant.
    assert dict(duckling.fields) == {
        "name": "ugly_duckling",
        "address": "12_st_._johns_street_city_centre",
        "area": "centre",
        "food": "chinese",
        "postcode": "cb21tw",
        "pricerange": "expensive",
        "type": "restaurant",
    }
    assert burger.fields["food"] == "north_american"
    assert list(rosa.fields) == ["name", *ATTRIBUTES["hotel"]]
    assert rosa.fields["stars"] == "4_star"
    assert rosa.fields["address"] == "sleeperz_hotel,_station_road"
    assert rosa.domain == "hotel"
    assert williams.fields["pricerange"] == "<dontknow>"
    assert williams.fields["address"] == "gwydir_street_,_no._5_dale_'_s_brewery"
    assert "entrance fee" not in williams.fields and "openhours" not in williams.fields


def test_missing_db_file_names_the_file(make_paths: MakePaths) -> None:
    files = db_files()
    del files["mwoz/multiwoz_db/hotel_db.json"]
    with pytest.raises(DataError, match=r"hotel_db\.json"):
        load_db_records(make_paths(files))


def test_malformed_db_files_are_reported(make_paths: MakePaths) -> None:
    files = db_files()
    files["mwoz/multiwoz_db/hotel_db.json"] = "[{"
    with pytest.raises(DataError, match=r"hotel_db\.json.*not valid JSON"):
        load_db_records(make_paths(files))


def test_entity_without_name_is_reported(make_paths: MakePaths) -> None:
    with pytest.raises(DataError, match="entity #0 has no 'name'"):
        load_db_records(make_paths(db_files(attractions=[{"area": "centre"}])))


def test_duplicate_ids_are_reported(make_paths: MakePaths) -> None:
    twice = [RESTAURANTS[0], {**RESTAURANTS[0], "name": "ugly  duckling"}]
    with pytest.raises(DataError, match="restaurant/ugly_duckling"):
        load_db_records(make_paths(db_files(restaurants=twice)))


DEV = """#restaurant#
0 12_st_._johns_street_city_centre centre chinese cb21tw expensive restaurant ikxbxweo name ugly_duckling
0 ugly_duckling address 12_st_._johns_street_city_centre
0 ugly_duckling area centre
0 ugly_duckling food chinese
0 ugly_duckling postcode cb21tw
0 ugly_duckling pricerange expensive
0 ugly_duckling type restaurant
0 ugly_duckling ref ikxbxweo
0 regent_street centre north_american 01223312598 cb21ab cheap restaurant name gourmet_burger_kitchen
0 gourmet_burger_kitchen address regent_street
0 gourmet_burger_kitchen area centre
0 gourmet_burger_kitchen food north_american
0 gourmet_burger_kitchen phone 01223312598
0 gourmet_burger_kitchen postcode cb21ab
0 gourmet_burger_kitchen pricerange cheap
0 gourmet_burger_kitchen type restaurant
1 hi .\tbook ugly_duckling ?\t['ugly_duckling']

#hotel#
0 sleeperz_hotel,_station_road centre 01223512596 cb11su cheap 4_star guesthouse several name no_such_hotel
0 no_such_hotel address sleeperz_hotel,_station_road
0 no_such_hotel choice several
1 hi .\tbye .\t[]
"""

WILLIAMS = "williams_art_and_antiques"
TEST = f"""#attraction#
0 gwydir_street_,_no._5_dale_'_s_brewery centre 01223311687 cb12lj <dontknow> museum name {WILLIAMS}
0 williams_art_and_antiques address gwydir_street_,_no._5_dale_'_s_brewery
0 williams_art_and_antiques area centre
0 williams_art_and_antiques phone 01223311687
0 williams_art_and_antiques postcode cb12lj
0 williams_art_and_antiques pricerange <dontknow>
0 williams_art_and_antiques type museum
0 williams_art_and_antiques choice 5
1 hi .\tbye .\t[]
"""


def test_read_dfnet_kb_rows(make_paths: MakePaths) -> None:
    paths = make_paths({"mwoz/dfnet_txt/dev.txt": DEV})
    rows = read_dfnet_kb_rows(paths.data_dir / "mwoz" / "dfnet_txt" / "dev.txt")
    assert [(r.domain, r.name, r.line) for r in rows] == [
        ("restaurant", "ugly_duckling", 2),
        ("restaurant", "gourmet_burger_kitchen", 10),
        ("hotel", "no_such_hotel", 21),
    ]
    assert rows[0].fields["ref"] == "ikxbxweo"
    assert rows[2].fields == {
        "name": "no_such_hotel",
        "address": "sleeperz_hotel,_station_road",
        "choice": "several",
    }


def test_read_dfnet_kb_rows_rejects_stray_rows(make_paths: MakePaths) -> None:
    paths = make_paths({"mwoz/dfnet_txt/dev.txt": "#hotel#\n0 a b c d\n"})
    with pytest.raises(DataError, match=r"dev.txt:2: KB line is neither"):
        read_dfnet_kb_rows(paths.data_dir / "mwoz" / "dfnet_txt" / "dev.txt")


def test_unmatched_kb_rows_reports_each_problem(make_paths: MakePaths) -> None:
    paths = make_paths({**db_files(), "mwoz/dfnet_txt/dev.txt": DEV, "mwoz/dfnet_txt/test.txt": TEST})
    problems = unmatched_kb_rows(paths)
    # ugly_duckling (ref aside) and williams_art_and_antiques (choice aside) match; the other two do not.
    assert len(problems) == 2
    burger, hotel = problems
    assert burger.startswith("dev.txt:10 restaurant/gourmet_burger_kitchen:")
    assert "address='regent_street' (DB: 'regent_street_city_centre')" in burger
    assert "pricerange='cheap' (DB: 'expensive')" in burger
    assert hotel == "dev.txt:21 hotel/no_such_hotel: 0 DB records with this name"


@pytest.mark.data
def test_real_db_has_222_records_matching_every_dev_test_row(data_paths: DataPaths) -> None:
    records = load_db_records(data_paths)
    assert len(records) == 222
    assert Counter(r.domain for r in records) == {"restaurant": 110, "hotel": 33, "attraction": 79}
    assert len({r.id for r in records}) == 222
    for record in records:
        assert set(record.fields) <= {"name", *ATTRIBUTES[record.domain]}
        assert record.domain in DOMAINS
        assert all(value and " " not in value and value == value.lower() for value in record.values)
    assert unmatched_kb_rows(data_paths) == []
