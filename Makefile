# make run   : set up .venv (once) and train + evaluate MetaMMF_GCN on the built-in dataset
# make test  : set up .venv (once) and run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test setup clean

run: $(VENV)/.installed
	$(PY) run_recbole.py --model=MetaMMF_GCN --dataset=mm-ml-100k

test: $(VENV)/.installed
	$(PY) -m pytest -q

setup: $(VENV)/.installed

# torch first and exactly: an unpinned torch (asked for by RecBole) would pull a multi-GB CUDA build
$(VENV)/.installed: requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) log log_tensorboard saved dataset
