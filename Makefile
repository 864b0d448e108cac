# make run   : set up .venv (once) and train + evaluate MetaMMF_GCN on the built-in dataset
# make test  : set up .venv (once), check the import layers (.importlinter), build the docs strictly (a broken
#              link fails) and run the whole test suite
# make docs  : build the documentation site into site/ (mkdocs.yml; see docs/architecture.md)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test docs setup clean

run: $(VENV)/.installed
	$(PY) run_recbole.py --model=MetaMMF_GCN --dataset=mm-ml-100k

# the strict docs build goes into a throwaway directory; pytest runs last, so its summary closes the output
test: $(VENV)/.installed
	$(VENV)/bin/lint-imports --no-cache
	@d=$$(mktemp -d) && NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir "$$d"; rc=$$?; rm -rf "$$d"; exit $$rc
	$(PY) -m pytest -q

docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

setup: $(VENV)/.installed

# torch first and exactly: an unpinned torch (asked for by RecBole) would pull a multi-GB CUDA build
$(VENV)/.installed: requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) log log_tensorboard saved dataset site
