# bracketflow — the two commands are `make run` and `make test`; everything else is for contributors.
# Every target installs what it needs itself, once: the virtualenvs are rebuilt only when a requirements file changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
export PYTHONPATH := layers/common:streamer:.
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= ap-south-1

.PHONY: run test lint fmt bench soak build deploy validate account record replay demo clean venv sam-venv paper

venv: $(VENV)/.installed
sam-venv: $(SAM_VENV)/.installed

$(VENV)/.installed: requirements/dev.txt layers/common/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the app's dependencies into $(VENV) ..."
	@$(PY) -m pip install -qq --upgrade pip
	@$(PY) -m pip install -qq -r requirements/dev.txt
	@touch $@

$(SAM_VENV)/.installed: requirements/sam.txt
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	@echo "installing SAM CLI into $(SAM_VENV) ..."
	@$(SAM_VENV)/bin/python -m pip install -qq --upgrade pip
	@$(SAM_VENV)/bin/python -m pip install -qq -r requirements/sam.txt
	@touch $@

## make run: the whole system on this machine, paper mode, no AWS account, no Docker.
run: venv
	@$(PY) -m local

## make test: lint, every test, and the template checks (sam validate --lint, sam build).
test: venv sam-venv lint validate build
	@$(PY) -m pytest -q -n 2 --dist loadgroup

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

fmt: venv
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

typecheck: venv
	@$(VENV)/bin/mypy

validate: sam-venv
	@$(SAM) validate --template template.yaml --region $(AWS_DEFAULT_REGION)
	@$(SAM) validate --lint --template template.yaml --region $(AWS_DEFAULT_REGION)

## make demo [BRACKET=<id>]: against a running `make run`, send a TradingView-style alert (or take BRACKET) and follow
## it live from entry to exit, then summarise it; same API_PORT/PAPER_PORT/LOCAL_API_KEY as `make run`.
demo: venv
	@$(PY) -m local.demo $(BRACKET)

## make paper: the paper exchange alone (PAPER_PORT, PAPER_MARKET=manual|walk, PAPER_SEED, PAPER_API_KEY, PAPER_ACCESS_TOKEN).
paper: venv
	@$(PY) -m paper

bench: venv
	@$(PY) -m benchmarks

## make soak [SOAK_BRACKETS=1000] [SOAK_SEED=16]: the seeded chaos soak on the local stack (well under 30 minutes);
## results to benchmarks/results/soak.json and README's soak table. Exit code 1 when a check found a violation.
soak: venv
	@$(PY) -m local.soak $(if $(SOAK_BRACKETS),--brackets $(SOAK_BRACKETS)) $(if $(SOAK_SEED),--seed $(SOAK_SEED))

## make replay FRAMES=session.bin WATCHLIST=watchlist.json [EXITS=exits.jsonl]: run the trailing engine over a recording.
replay: venv
	@test -n "$(FRAMES)" -a -n "$(WATCHLIST)" || (echo 'usage: make replay FRAMES=file WATCHLIST=file [EXITS=out.jsonl]' && exit 2)
	@$(PY) -m streamer.replay --frames "$(FRAMES)" --watchlist "$(WATCHLIST)" $(if $(EXITS),--exits "$(EXITS)")

## make record OUT=session.bin [SECONDS=60] [TOKENS="408065 738561"]: record the ticker feed (BROKER_TICKER_URL) until Ctrl-C.
record: venv
	@test -n "$(OUT)" || (echo 'usage: make record OUT=file [SECONDS=n] [TOKENS="t1 t2"]' && exit 2)
	@$(PY) -m streamer.record --out "$(OUT)" $(if $(SECONDS),--seconds $(SECONDS)) $(if $(TOKENS),--tokens $(TOKENS))

## make account NAME="Asha": a new account on the stack TABLE_NAME/AWS_ENDPOINT_URL point at; prints its API key once.
account: venv
	@test -n "$(NAME)" || (echo 'usage: make account NAME="Your Name"' && exit 2)
	@$(PY) -m bracketflow.admin create-account "$(NAME)"

build: sam-venv
	@$(SAM) build --template template.yaml > .aws-sam-build.log 2>&1 || (cat .aws-sam-build.log; exit 1)
	@echo "sam build: ok (.aws-sam/build)"

deploy: build
	@$(SAM) deploy --guided

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .ruff_cache .mypy_cache
