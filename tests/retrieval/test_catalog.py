"""Catalog readers and cleaning: MovieLens formats, mapped CSV/JSONL/JSON, and every kind of bad input."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.catalog import detect_format, item_document, read_catalog
from retrieval.config import CleanConfig
from retrieval.errors import CatalogError
from retrieval.mapping import ColumnMapping, load_mapping, mapping_from
from retrieval.types import Item


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


BOOKS = """isbn,name,authors,year,price,in_print,blurb
111,Dune,Frank Herbert,1965,9.99,true,Desert planet politics
222,Emma,Jane Austen,1815,4.50,no,A matchmaker in Highbury
333,Good Omens,Terry Pratchett|Neil Gaiman,1990,7.25,yes,The end of the world is nigh
"""
BOOK_MAPPING = ColumnMapping(
    id="isbn",
    title="name",
    text=["blurb"],
    metadata={"authors": "list", "year": "int", "price": "float", "in_print": "bool"},
)


# --- MovieLens ---------------------------------------------------------------------------------------------------


def test_movielens_latest_sample(ml_sample: Path) -> None:
    catalog = read_catalog(ml_sample)
    report = catalog.report
    assert report.format == "movielens-latest"
    assert report.rows_read == 300 == report.accepted + report.rejected
    assert report.rejected == 0
    items = {i.id: i for i in catalog.items}
    toy = items["1"]
    assert toy.title == "Toy Story (1995)"
    assert toy.metadata["year"] == 1995
    assert toy.metadata["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert "pixar" in [t.lower() for t in toy.metadata["tags"]]  # merged from tags.csv
    assert "tags_merged" in report.notes
    assert item_document(toy).startswith("Toy Story (1995)\nGenres: Adventure, Animation, Children, Comedy, Fantasy")


def test_movielens_full_latest_small(ml_small: Path) -> None:
    catalog = read_catalog(ml_small)
    assert catalog.report.accepted == 9742 == len(catalog.items)
    assert catalog.report.consistent
    no_genre = [i for i in catalog.items if "genres" not in i.metadata]
    assert no_genre, "'(no genres listed)' becomes no genres"
    assert all("(no genres listed)" not in i.metadata.get("genres", []) for i in catalog.items)


def test_movielens_100k_latin1(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    flags = ["0"] * 19
    comedy = flags.copy()
    comedy[5] = "1"  # Comedy
    comedy[8] = "1"  # Drama
    lines = [
        "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(comedy),
        "2|Amélie (2001)|01-Jan-2001||http://y|" + "|".join(flags),
        "3|Broken line|01-Jan-2001",
    ]
    write(folder / "u.item", "\n".join(lines) + "\n", encoding="latin-1")
    catalog = read_catalog(folder)
    report = catalog.report
    assert report.format == "movielens-100k"
    assert (report.rows_read, report.accepted, report.rejected) == (3, 2, 1)
    assert "wrong_column_count" in report.rejections
    items = {i.id: i for i in catalog.items}
    assert items["1"].metadata["genres"] == ["Comedy", "Drama"]
    assert items["2"].title == "Amélie (2001)"  # latin-1 decoded
    assert "genres" not in items["2"].metadata


def test_movielens_1m(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    write(folder / "movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Café (1999)::Drama\n", "latin-1")
    catalog = read_catalog(folder, format="movielens")
    assert catalog.report.format == "movielens-1m"
    items = {i.id: i for i in catalog.items}
    assert items["1"].metadata == {"genres": ["Animation", "Children's", "Comedy"], "year": 1995}
    assert items["2"].title == "Café (1999)"


def test_detect_format(tmp_path: Path, ml_sample: Path) -> None:
    assert detect_format(ml_sample) == "movielens-latest"
    assert detect_format(ml_sample / "movies.csv") == "movielens-latest"
    assert detect_format(write(tmp_path / "b.csv", BOOKS)) == "csv"
    assert detect_format(write(tmp_path / "b.jsonl", "{}")) == "jsonl"
    assert detect_format(write(tmp_path / "b.json", "[]")) == "json"
    with pytest.raises(CatalogError) as err:
        detect_format(write(tmp_path / "b.xlsx", "x"))
    assert "--format" in err.value.hint
    with pytest.raises(CatalogError, match="not a MovieLens folder"):
        detect_format(tmp_path)


# --- generic files with a mapping ----------------------------------------------------------------------------------


def test_csv_with_mapping_types(tmp_path: Path) -> None:
    catalog = read_catalog(write(tmp_path / "books.csv", BOOKS), mapping=BOOK_MAPPING)
    items = {i.id: i for i in catalog.items}
    assert items["333"].metadata == {
        "authors": ["Terry Pratchett", "Neil Gaiman"],
        "year": 1990,
        "price": 7.25,
        "in_print": True,
    }
    assert items["222"].metadata["in_print"] is False
    assert items["111"].texts == {"blurb": "Desert planet politics"}
    assert item_document(items["333"]) == (
        "Good Omens (1990)\nAuthors: Terry Pratchett, Neil Gaiman\nBlurb: The end of the world is nigh"
    )


def test_default_mapping_makes_other_columns_text(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", "id,title,brand,description\np1,Kettle,Acme,Boils water fast\n")
    (item,) = read_catalog(path).items
    assert item.texts == {"brand": "Acme", "description": "Boils water fast"}


def test_mapping_files(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "m.toml",
        'id = "isbn"\ntitle = "name"\ntext = ["blurb"]\nlist_sep = "|"\n[metadata]\nyear = "int"\nauthors = "list"\n',
    )
    assert load_mapping(toml).metadata == {"year": "int", "authors": "list"}
    as_json = write(tmp_path / "m.json", json.dumps({"mapping": {"id": "isbn", "title": "name"}}))
    assert load_mapping(as_json).id == "isbn"
    bad = write(tmp_path / "bad.toml", 'id = "x"\n[metadata]\nyear = "integer"\n')
    with pytest.raises(CatalogError, match=r"metadata\.year") as err:
        load_mapping(bad)
    assert "int|float|str|list|bool" in err.value.hint
    with pytest.raises(CatalogError, match="cannot be parsed"):
        load_mapping(write(tmp_path / "broken.toml", "id = "))
    with pytest.raises(CatalogError, match="both text and metadata"):
        mapping_from(id_col="a", title_col="b", text_cols=["c"], metadata={"c": "int"})


def test_jsonl(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": 1, "title": "A", "tags": ["x", "y"], "plot": "first"}),
        "{not json",
        json.dumps([1, 2]),
        "",
        json.dumps({"id": 2, "title": "B", "tags": "z|w", "plot": "second"}),
    ]
    mapping = ColumnMapping(text=["plot"], metadata={"tags": "list"})
    catalog = read_catalog(write(tmp_path / "c.jsonl", "\n".join(lines)), mapping=mapping)
    report = catalog.report
    assert (report.rows_read, report.accepted, report.rejected) == (4, 2, 2)
    assert set(report.rejections) == {"invalid_json", "not_an_object"}
    assert report.rejections["invalid_json"].examples[0].startswith("line 2")
    assert [i.metadata["tags"] for i in catalog.items] == [["x", "y"], ["z", "w"]]
    assert catalog.items[0].id == "1"


def test_json_object_of_objects(tmp_path: Path) -> None:
    data = {"10": {"name": "Heat", "genre": ["Crime"], "plot": "Cops and robbers"}, "11": {"name": "Up"}}
    mapping = ColumnMapping(title="name", text=["plot"], metadata={"genre": "list"})
    catalog = read_catalog(write(tmp_path / "movies.json", json.dumps(data)), mapping=mapping)
    items = {i.id: i for i in catalog.items}
    assert items["10"].metadata["genre"] == ["Crime"] and items["11"].title == "Up"


def test_multiline_quoted_field(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", 'id,title,notes\n1,"Hello, world","line one\nline two"\n2,Bye,x\n')
    catalog = read_catalog(path)
    assert catalog.items[0].texts["notes"] == "line one\nline two"
    assert len(catalog.items) == 2


# --- bad input ---------------------------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="is empty") as err:
        read_catalog(write(tmp_path / "empty.csv", ""))
    assert err.value.hint
    with pytest.raises(CatalogError, match="is empty"):
        read_catalog(write(tmp_path / "blank.csv", "\n\n  \n"))


def test_header_only(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no usable item among 0 row"):
        read_catalog(write(tmp_path / "h.csv", "id,title\n"))


def test_wrong_delimiter_named_in_hint(tmp_path: Path) -> None:
    path = write(tmp_path / "semi.csv", "id;title;genres\n1;Heat;Crime\n2;Up;Animation\n")
    with pytest.raises(CatalogError) as err:
        read_catalog(path, mapping=ColumnMapping(delimiter=","))
    assert "'id'" in err.value.message and "'id;title;genres'" in err.value.message
    assert "';'" in err.value.hint
    # sniffed automatically when no delimiter is forced
    assert [i.title for i in read_catalog(path).items] == ["Heat", "Up"]


def test_missing_mapped_column_names_it_and_lists_found(tmp_path: Path) -> None:
    path = write(tmp_path / "b.csv", BOOKS)
    mapping = BOOK_MAPPING.model_copy(update={"text": ["summary"]})
    with pytest.raises(CatalogError) as err:
        read_catalog(path, mapping=mapping)
    message = err.value.message
    assert "'summary'" in message and "not found" in message
    assert "'isbn'" in message and "'blurb'" in message  # the columns found
    with pytest.raises(CatalogError, match="'nope'"):
        read_catalog(write(tmp_path / "c.jsonl", '{"id": 1, "title": "x"}\n'), mapping=ColumnMapping(text=["nope"]))


def test_binary_garbage(tmp_path: Path) -> None:
    rng = random.Random(1)
    garbage = bytes(rng.randrange(256) for _ in range(4096))
    path = tmp_path / "garbage.csv"
    path.write_bytes(garbage)
    with pytest.raises(CatalogError, match="binary") as err:
        read_catalog(path)
    assert "CSV" in err.value.hint
    no_nul = bytes(b or 1 for b in garbage)  # garbage without NUL bytes still fails cleanly
    path.write_bytes(no_nul)
    with pytest.raises(CatalogError):
        read_catalog(path)
    path.write_bytes(os.urandom(2000).replace(b"\x00", b"a"))
    with pytest.raises(CatalogError):
        read_catalog(path, format="jsonl")


def test_duplicate_ids_keep_first(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "id,title\n1,First\n2,Two\n1,Second\n1,Third\n")
    catalog = read_catalog(path)
    report = catalog.report
    assert [i.title for i in catalog.items] == ["First", "Two"]
    assert (report.rows_read, report.accepted, report.rejected) == (4, 2, 2)
    dup = report.rejections["duplicate_id"]
    assert dup.count == 2 and dup.examples[0].startswith("line 4")
    with pytest.raises(CatalogError, match="duplicate_id") as err:
        read_catalog(path, strict=True)
    assert "--strict" in err.value.hint


def test_missing_titles_ids_and_short_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "id,title,extra\n1,,x\n,No id,x\n3,Fine,x\n4,Short\n")
    report = read_catalog(path).report
    assert (report.rows_read, report.accepted, report.rejected) == (4, 1, 3)
    assert set(report.rejections) == {"missing_title", "missing_id", "wrong_column_count"}


def test_mixed_encodings(tmp_path: Path) -> None:
    data = "id,title\n1,Amélie\n".encode() + "2,Café Society\n".encode("latin-1") + "3,Naïve\n".encode()
    path = tmp_path / "mixed.csv"
    path.write_bytes(data)
    catalog = read_catalog(path)
    assert [i.title for i in catalog.items] == ["Amélie", "Café Society", "Naïve"]
    fix = catalog.report.fixes["line_decoded_as_cp1252"]
    assert fix.count == 1 and fix.examples[0].startswith("line 3")
    assert "cp1252" in catalog.report.encoding
    with pytest.raises(CatalogError, match="line_decoded_as_cp1252"):
        read_catalog(path, strict=True)


def test_whole_file_latin1_and_utf16(tmp_path: Path) -> None:
    latin = write(tmp_path / "l.csv", "id,title\n1,Café\n2,Crème brûlée\n", "latin-1")
    catalog = read_catalog(latin)
    assert [i.title for i in catalog.items] == ["Café", "Crème brûlée"]
    assert catalog.report.encoding == "cp1252" and "encoding_not_utf8" in catalog.report.notes
    assert not catalog.report.fixes
    utf16 = write(tmp_path / "u.csv", "id,title\n1,Café\n", "utf-16")
    assert read_catalog(utf16).items[0].title == "Café"
    replaced = read_catalog(latin, mapping=ColumnMapping(encoding="utf-8"))
    assert replaced.report.fixes["invalid_bytes_replaced"].count == 2
    assert "\ufffd" in replaced.items[0].title


def test_ten_megabyte_description_is_truncated(tmp_path: Path) -> None:
    big = "word " * (2 * 1024 * 1024)  # 10 MiB
    path = write(tmp_path / "big.csv", f'id,title,description\n1,Huge,"{big}"\n2,Small,short\n')
    catalog = read_catalog(path, clean=CleanConfig(max_field_chars=5000))
    assert catalog.report.accepted == 2
    assert len(catalog.items[0].texts["description"]) == 5000
    fix = catalog.report.fixes["text_truncated"]
    assert fix.count == 1 and "10,485,759 characters" in fix.examples[0]  # stripped
    big_jsonl = write(tmp_path / "big.jsonl", json.dumps({"id": 1, "title": "Huge", "plot": big}) + "\n")
    assert len(read_catalog(big_jsonl).items[0].texts["plot"]) == CleanConfig().max_field_chars


def test_invalid_typed_values_are_dropped_and_counted(tmp_path: Path) -> None:
    text = BOOKS + "444,Odd,Someone,nineteen-ninety,cheap,maybe,???\n"
    catalog = read_catalog(write(tmp_path / "b.csv", text), mapping=BOOK_MAPPING)
    odd = {i.id: i for i in catalog.items}["444"]
    assert odd.metadata == {"authors": ["Someone"]}
    assert {"invalid_int", "invalid_float", "invalid_bool"} <= set(catalog.report.fixes)
    assert "'nineteen-ninety'" in catalog.report.fixes["invalid_int"].examples[0]
    with pytest.raises(CatalogError, match="invalid_int"):
        read_catalog(write(tmp_path / "b2.csv", text), mapping=BOOK_MAPPING, strict=True)
    read_catalog(write(tmp_path / "b3.csv", BOOKS), mapping=BOOK_MAPPING, strict=True)  # clean file passes


def test_limit_and_bad_limit(tmp_path: Path) -> None:
    path = write(tmp_path / "b.csv", BOOKS)
    catalog = read_catalog(path, mapping=BOOK_MAPPING, limit=2)
    assert catalog.report.rows_read == 2 and "limit_reached" in catalog.report.notes
    with pytest.raises(CatalogError, match="--limit"):
        read_catalog(path, limit=0)


def test_mapping_rejected_for_movielens(ml_sample: Path) -> None:
    with pytest.raises(CatalogError, match="MovieLens"):
        read_catalog(ml_sample, mapping=ColumnMapping(id="x", title="y"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12), min_size=0, max_size=5),
        max_size=12,
    ),
    header=st.sampled_from(["id,title,year", "id,title", "title,year", "id;title;year"]),
)
def test_any_csv_gives_a_report_or_a_catalog_error(tmp_path: Path, rows: list[list[str]], header: str) -> None:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path = tmp_path / "any.csv"
    path.write_text(header + "\n" + buf.getvalue(), encoding="utf-8")
    try:
        catalog = read_catalog(path, mapping=ColumnMapping(metadata={"year": "int"}) if "year" in header else None)
    except CatalogError as exc:
        assert exc.hint
        return
    report = catalog.report
    assert report.rows_read == report.accepted + report.rejected
    assert len(catalog.items) == report.accepted
    assert len({i.id for i in catalog.items}) == len(catalog.items)


def test_item_document_template() -> None:
    item = Item(
        id="9",
        title="Heat",
        texts={"plot": "A cop chases a thief."},
        metadata={"year": 1995, "tags": ["heist"], "genres": ["Crime", "Drama"], "director": "Mann", "runtime": 170},
    )
    assert item_document(item) == (
        "Heat (1995)\nGenres: Crime, Drama\nTags: heist\nDirector: Mann\nPlot: A cop chases a thief."
    )
