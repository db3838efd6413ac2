"""A bibliography style whose labels read like the text's citations: "Peters et al., 2018".

pybtex's built-in styles label entries "[PNI+18]" (alpha) or "[1]" (plain); the book cites
by author and year, so the reference list uses the same labels, sorted by author and year.
Registered as the pybtex style ``author_year_plain`` when Sphinx loads this extension.
"""

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def author_year(entry) -> str:
    """"Peters et al., 2018", "Howard and Ruder, 2018" or "Harris, 1954"."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in people]
    if not names:
        who = entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    """One author-year label per entry; a letter tells apart two that would be the same."""

    def format_labels(self, sorted_entries):
        labels = [author_year(entry) for entry in sorted_entries]
        repeats: dict[str, int] = {}
        for label in labels:
            if labels.count(label) > 1:
                repeats[label] = repeats.get(label, 0) + 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[repeats[label] - 1]
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = "author_year"
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels)
    register_plugin("pybtex.style.formatting", "author_year_plain", AuthorYearStyle)
    return {"parallel_read_safe": True}
