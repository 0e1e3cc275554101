# Two commands on a fresh machine: `make train` and `make test`. `make help` lists the rest.
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
PYTHON ?= python3.11
STAMP := $(VENV)/.installed
# STORE=<tracking uri> names the store for every target that touches one; not given, each
# command uses MLFLOW_TRACKING_URI if it is set, else the project's mlflow.db (store_uri in
# pipeline/tracking/store.py). Set here so that an unrelated STORE in the environment is not.
STORE :=
STORE_OPTION = $(if $(STORE),--uri '$(STORE)')
STORE_OVERRIDE = $(if $(STORE),'tracking.uri=$(STORE)')
HOST ?= 127.0.0.1
# PORT= picks the port of `make ui` (default 5000) and of `make serve` (default 5002).
UI_PORT = $(or $(PORT),5000)
SERVE_PORT = $(or $(PORT),5002)
# `make server` listens on SERVER_HOST:SERVER_PORT; `tracking=server` reads the same two
# variables from the environment (conf/tracking/server.yaml), so runs follow the server.
SERVER_HOST ?= $(HOST)
SERVER_PORT ?= 5001
# How to point runs at a server on a non-default address: SERVER_PORT=5003 make train ...
SERVER_ENV = $(if $(filter-out 127.0.0.1 0.0.0.0,$(SERVER_HOST)),SERVER_HOST=$(SERVER_HOST) )$(if $(filter-out 5001,$(SERVER_PORT)),SERVER_PORT=$(SERVER_PORT) )
# One line and exit 1 when a server cannot listen on that address (mlflow server only logs
# "address already in use" and exits 0).
CHECK_PORT = $(PY) -m pipeline.commands.serve --check-port
ARGS ?=

export MLFLOW_DISABLE_TELEMETRY ?= true

# The variables each target takes. One given on the command line that no requested target
# takes (`make ui port=5101`, `make train ARG="..."`) would be silently ignored and the
# defaults run: make stops first, naming the ones it takes. A make started by another make
# inherits that one's variables: not checked there. Targets without a list are not checked.
VARS_ALL := PYTHON MLFLOW_DISABLE_TELEMETRY
VARS_help :=
VARS_venv :=
VARS_train := ARGS STORE
VARS_test := ARGS
VARS_test-fast := ARGS
VARS_lint :=
VARS_bench := ARGS
VARS_ui := HOST PORT STORE
VARS_server := SERVER_HOST SERVER_PORT HOST BACKEND
VARS_serve := RUN_ID MODEL HOST PORT STORE PLUGINS
VARS_log-model := RUN_ID STORE
VARS_plots := RUN_ID STORE ARGS
VARS_sweep := ARGS STORE
VARS_tune := ARGS STORE
VARS_rerun := RUN_ID ARGS STORE
VARS_compare := RUNS ARGS STORE
VARS_sync := DIR ARGS STORE
VARS_promote := RUN_ID NAME ALIAS FORCE STORE ARGS
VARS_clean-runs := ARGS STORE
VARS_clean := FORCE
VARS_lock :=
CHECKED_GOALS := $(foreach goal,$(or $(MAKECMDGOALS),help),$(if $(filter undefined,$(origin VARS_$(goal))),,$(goal)))
OWN_VARS := $(sort $(foreach goal,$(CHECKED_GOALS),$(VARS_$(goal))))
TAKEN_VARS := $(VARS_ALL) $(OWN_VARS)
UNKNOWN_VARS := $(strip $(foreach var,$(.VARIABLES),$(if $(filter command line,$(origin $(var))),$(filter-out $(TAKEN_VARS),$(var)))))
ifeq ($(MAKELEVEL)$(if $(CHECKED_GOALS),,none)$(if $(UNKNOWN_VARS),,none),0)
comma := ,
empty :=
space := $(empty) $(empty)
# PORT for port, RUN_ID for RUNID, ARGS for ARG.
similar = $(strip $(foreach var,$(TAKEN_VARS),$(if $(filter $(subst _,,$(shell printf %s '$(1)' | tr a-z A-Z)) $(subst _,,$(shell printf %s '$(1)' | tr a-z A-Z))S,$(subst _,,$(var))),$(var))))
HINTS := $(strip $(foreach var,$(UNKNOWN_VARS),$(call similar,$(var))))
$(error make $(CHECKED_GOALS): unknown variable $(subst $(space),$(comma) ,$(UNKNOWN_VARS))$(if $(HINTS), (did you mean $(subst $(space),$(comma) ,$(HINTS))?)); make $(CHECKED_GOALS) takes $(or $(subst $(space),$(comma) ,$(OWN_VARS)),no variables); stopped, nothing ran)
endif

.DEFAULT_GOAL := help
.PHONY: help venv train test test-fast lint bench ui server serve log-model promote plots sweep tune rerun compare sync clean clean-runs lock

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps hydra-optuna-sweeper==1.3.0
	@touch $(STAMP)

venv: $(STAMP) ## create .venv from the pinned versions (done by every target that needs it)

train: $(STAMP) ## run the default pipeline (overrides: make train ARGS="optimizer=adam train.epochs=500"; STORE=)
	$(PY) -m pipeline $(STORE_OVERRIDE) $(ARGS)

test: $(STAMP) ## run every test, slow end-to-end ones included (CI's command)
	$(PY) -m pytest $(ARGS)

test-fast: $(STAMP) ## run the tests that take seconds (skips those marked slow)
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .

TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-2.13.0*cp311*.whl))

bench: $(STAMP) ## speed: the core vs NumPy, scikit-learn, PyTorch; start-up, sweeps, long runs, CSV loading (ARGS="--quick", ARGS="--only csv")
	@# PyTorch only for the parts that compare against it (--needs-torch says), and only from
	@# a local wheel: a plain `pip install torch` pulls a multi-GB CUDA build.
	@if [ -n "$(TORCH_WHEEL)" ] && $(PY) -m bench $(ARGS) --needs-torch \
		&& ! $(PY) -c "import torch" 2>/dev/null; then \
		$(PY) -m pip install --quiet -c requirements.lock "$(TORCH_WHEEL)"; fi
	$(PY) -m bench $(ARGS)

ui: $(STAMP) ## open the runs: the MLflow UI on http://127.0.0.1:5000 (HOST=, PORT=, STORE= to change)
	@$(CHECK_PORT) $(HOST) $(UI_PORT) --target "make ui" --variable PORT
	@# Creates the store if it is new (under the lock every run takes), records the UI's
	@# address beside it for the links runs print, prints the UI's link, runs `mlflow ui`.
	@$(PY) -m pipeline.commands.ui --host $(HOST) --port $(UI_PORT) $(STORE_OPTION)

sweep: $(STAMP) ## an example sweep: 3 learning rates x 2 architectures, one MLflow parent run (ARGS=, STORE=)
	$(PY) -m pipeline -m optimizer.lr=0.001,0.01,0.1 'model.hidden_sizes=[8],[16,8]' \
		train.epochs=500 $(STORE_OVERRIDE) $(ARGS)

tune: $(STAMP) ## an Optuna search (conf/hparams_search/mlp_optuna.yaml), one MLflow parent run (ARGS=, STORE=)
	$(PY) -m pipeline hparams_search=mlp_optuna $(STORE_OVERRIDE) $(ARGS)

server: $(STAMP) ## an MLflow tracking server (sqlite backend, artifacts under mlartifacts/) on 127.0.0.1:5001 (SERVER_HOST=, SERVER_PORT=)
	@$(CHECK_PORT) $(SERVER_HOST) $(SERVER_PORT) --target "make server" --variable SERVER_PORT
	@$(PY) -m pipeline.tracking.store $(or $(BACKEND),sqlite:///$(ROOT)/mlflow-server.db)
	@echo "MLflow server: http://$(SERVER_HOST):$(SERVER_PORT)/#/experiments?workflowType=machine_learning  runs: $(SERVER_ENV)make train ARGS=tracking=server"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server \
		--backend-store-uri $(or $(BACKEND),sqlite:///$(ROOT)/mlflow-server.db) \
		--artifacts-destination $(ROOT)/mlartifacts --serve-artifacts \
		--host $(SERVER_HOST) --port $(SERVER_PORT) --workers 1

serve: $(STAMP) ## serve a model over HTTP: make serve RUN_ID=<id> (or MODEL=models:/<name>@champion, models:/<model id>) on 127.0.0.1:5002 (HOST=, PORT=, STORE=, PLUGINS=)
	@# Resolves the run to models:/<model_id> in STORE (default: MLFLOW_TRACKING_URI, else the
	@# project's mlflow.db),
	@# then runs `mlflow models serve --env-manager local` with .venv/bin on the PATH
	@# (MLflow starts uvicorn by name) and MLFLOW_TRACKING_URI=STORE. PLUGINS=a,b: the modules
	@# a run's plugin transforms come from (its pipeline.plugins), imported by the server.
	@PATH="$(VENV)/bin:$$PATH" $(PY) -m pipeline.commands.serve $(STORE_OPTION) --host $(HOST) \
		--port $(SERVE_PORT) $(if $(RUN_ID),--run-id '$(RUN_ID)') $(if $(MODEL),--model '$(MODEL)') \
		$(if $(PLUGINS),--plugins '$(PLUGINS)')

log-model: $(STAMP) ## log a run's MLflow model afterwards (a lean sweep job's): make log-model RUN_ID=<id> (STORE=)
	@test -n "$(RUN_ID)" || { echo "usage: make log-model RUN_ID=<mlflow run id> [STORE=<store uri>]" >&2; exit 2; }
	@$(PY) -m pipeline.commands.complete '$(RUN_ID)' --model $(STORE_OPTION)

promote: $(STAMP) ## register a run's model and move @champion to it if it is not worse: make promote RUN_ID=<id> [NAME=] [ALIAS=champion] [FORCE=1] [STORE=]
	@test -n "$(RUN_ID)" || { echo "usage: make promote RUN_ID=<mlflow run id> [NAME=<registered name>] [ALIAS=champion] [FORCE=1] [STORE=<store uri>] [ARGS=\"--metric log_loss --margin 0.01\"]" >&2; exit 2; }
	@$(PY) -m pipeline.commands.promote '$(RUN_ID)' $(STORE_OPTION) $(if $(NAME),--name '$(NAME)') \
		$(if $(ALIAS),--alias '$(ALIAS)') $(if $(FORCE),--force) $(ARGS)

plots: $(STAMP) ## draw and log a run's plots afterwards (a lean sweep job's): make plots RUN_ID=<id> (STORE=, ARGS="--plugins my_layers")
	@test -n "$(RUN_ID)" || { echo "usage: make plots RUN_ID=<mlflow run id> [STORE=<store uri>] [ARGS=\"--plugins <module>\"]" >&2; exit 2; }
	@$(PY) -m pipeline.commands.complete '$(RUN_ID)' --plots $(STORE_OPTION) $(ARGS)

rerun: $(STAMP) ## rerun a past run and check it reproduces bit for bit: make rerun RUN_ID=<id> (STORE=)
	@test -n "$(RUN_ID)" || { echo "usage: make rerun RUN_ID=<mlflow run id> [STORE=<store uri>]"; exit 2; }
	$(PY) -m pipeline.commands.rerun $(RUN_ID) $(STORE_OPTION) $(ARGS)

compare: $(STAMP) ## what differs between runs: make compare RUNS="<id> <id>" (or a sweep's parent id) [STORE=] [ARGS="--format md"]
	@test -n "$(RUNS)" || { echo "usage: make compare RUNS=\"<run id> <run id> ...\" (or a sweep's parent run id) [STORE=<store uri>] [ARGS=\"--format md|html|csv\"]"; exit 2; }
	$(PY) -m pipeline.commands.compare $(RUNS) $(STORE_OPTION) $(ARGS)

sync: $(STAMP) ## send a run's journal to its store: make sync DIR=<output or sweep folder> [STORE= another store]
	@test -n "$(DIR)" || { echo "usage: make sync DIR=<a run's or a sweep's output folder> [STORE=<store uri>]"; exit 2; }
	$(PY) -m pipeline.commands.sync $(DIR) $(STORE_OPTION) $(ARGS)

clean-runs: $(STAMP) ## mark runs left RUNNING by a killed process (no heartbeat for 10 min) KILLED (STORE=)
	$(PY) -m pipeline.commands.clean_runs $(STORE_OPTION) $(ARGS)

clean: ## remove outputs, sweeps and the stage cache (keeps the store; stops if a run exists only in its journal: FORCE=1)
	@if [ -z "$(FORCE)" ] && [ -x $(PY) ]; then \
		$(PY) -m pipeline.commands.sync --unsent $(ROOT)/outputs $(ROOT)/multirun || exit 1; fi
	rm -rf $(ROOT)/outputs $(ROOT)/multirun $(ROOT)/.cache

lock: $(STAMP) ## rewrite requirements.lock from the current .venv
	$(PY) -m pip freeze --exclude-editable | grep -v -e '^mlp-pipeline' -e '^torch' \
		-e '^hydra-optuna-sweeper' > requirements.lock
