# One command to build the book, one to run every test. Both create (or reuse) .venv
# and install what they need. See README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The course data sets live beside the repository; in Colab ctxlib downloads them instead.
export CTXLIB_DATA ?= $(abspath ../shared/data)

.PHONY: setup browser book test notebooks clean

# torch is pinned here (not in pyproject.toml) so that pip takes the local CPU wheel
# instead of pulling several GB of CUDA packages.
$(BIN)/.ctxlib-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# uv installs the hundred-odd other packages in seconds where pip takes minutes; it keeps
	# the torch installed above, which satisfies pyproject.toml's range.
	$(BIN)/python -m uv pip install --quiet --python $(BIN)/python -e ".[test,book]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(BIN)/.ctxlib-installed

book: setup
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "Open _build/html/index.html"

# The book's pages are checked in headless Chromium (Debian's chromium and chromium-driver).
# Installed here when missing and possible; otherwise the browser test says why it skips.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null) || echo "Could not install chromium: the browser test will skip."; \
	else echo "No chromium/chromedriver here: the browser test will skip (install them to run it)."; fi

# nbval runs chapters 1, 5, 6 and 7 under the smoke budget; chapters 0, 2, 3 and 4 run in
# tests/test_colab.py instead, alone with the package from a wheel, as Colab opens them.
# A smoke cell takes seconds; one that takes 15 minutes is hung (a dead kernel, a stuck
# read), and failing it then, with its traceback, beats waiting out CI's whole budget.
COLAB_TESTED := 00_setup 02_attention 03_elmo 04_gpt

test: setup browser
	CTXLIB_BUDGET=smoke $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-cell-timeout=900 --durations=15 \
	  $(foreach nb,$(COLAB_TESTED),--ignore=notebooks/$(nb).ipynb)

# Re-run every notebook under a real budget and store its outputs (what the book shows).
notebooks: setup
	$(BIN)/python scripts/execute_notebooks.py --budget $${BUDGET:-cpu}

clean:
	rm -rf _build
