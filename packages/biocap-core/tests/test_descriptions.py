"""Species descriptions reach images through the full 7-rank taxonomy, homonyms included."""

import polars as pl

from biocap_core.descriptions import per_uuid_descriptions

RANKS = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
LIZARD = ["Animalia", "Chordata", "Reptilia", "Squamata", "Phrynosomatidae", "Abronia", "umbellata"]
PLANT = [
    "Plantae",
    "Tracheophyta",
    "Magnoliopsida",
    "Caryophyllales",
    "Nyctaginaceae",
    "Abronia",
    "umbellata",
]


def test_homonyms_get_their_own_description():
    catalog = pl.DataFrame(
        [
            dict(zip(["uuid"] + RANKS, ["u1"] + LIZARD)),
            dict(zip(["uuid"] + RANKS, ["u2"] + [r.lower() for r in PLANT])),
            dict(zip(["uuid"] + RANKS, ["u3"] + PLANT[:6] + ["maritima"])),
        ]
    )
    descriptions = pl.DataFrame(
        [
            {
                "binomial": "Abronia umbellata",
                **dict(zip(RANKS, LIZARD)),
                "content": "a scaly lizard",
            },
            {
                "binomial": "Abronia umbellata",
                **dict(zip(RANKS, PLANT)),
                "content": "a pink sand verbena",
            },
        ]
    )
    out = per_uuid_descriptions(catalog, descriptions)
    assert out.rows() == [("u1", "a scaly lizard"), ("u2", "a pink sand verbena"), ("u3", None)]
