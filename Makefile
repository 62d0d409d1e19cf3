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

.PHONY: run test lint typecheck fmt openapi bench soak build deploy validate account token capital record replay demo clean venv sam-venv paper console browser

venv: $(VENV)/.installed
sam-venv: $(SAM_VENV)/.installed

$(VENV)/.installed: requirements/dev.txt layers/common/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the app's dependencies into $(VENV) ..."
	@$(PY) -m pip install -qq --upgrade pip
	@$(PY) -m pip install -qq -r requirements/dev.txt
	@touch $@

# The console's charting library, from its pinned npm package (console/package-lock.json), built into the console
# function's static files; never copied into the repository.
CONSOLE_VENDOR := functions/console/static/vendor/lightweight-charts.standalone.production.js
console: $(CONSOLE_VENDOR)

$(CONSOLE_VENDOR): console/package.json console/package-lock.json
	@echo "installing the console's charting library (npm ci) ..."
	@npm ci --prefix console --no-audit --no-fund --loglevel=error
	@mkdir -p $(dir $@)
	@cp console/node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js $@
	@cp console/node_modules/lightweight-charts/LICENSE $(dir $@)lightweight-charts.LICENSE

$(SAM_VENV)/.installed: requirements/sam.txt
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	@echo "installing SAM CLI into $(SAM_VENV) ..."
	@$(SAM_VENV)/bin/python -m pip install -qq --upgrade pip
	@$(SAM_VENV)/bin/python -m pip install -qq -r requirements/sam.txt
	@touch $@

## make run: the whole system on this machine, paper mode, no AWS account, no Docker.
run: venv console
	@$(PY) -m local

## make test: lint, the type check, every test, and the template checks (sam validate --lint, sam build).
test: venv sam-venv console browser lint typecheck validate build
	@$(PY) -m pytest -q -n 2 --dist loadgroup

## make browser: the headless Chromium and Firefox ESR the browser tests drive (Debian's packages; installed only
## when missing). Firefox is driven over WebDriver BiDi, which it speaks itself: no geckodriver to fetch.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/firefox-esr || (echo "installing chromium and firefox-esr (Debian packages) for the browser tests ..." && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium firefox-esr >/dev/null)

## make openapi: rewrite the API's OpenAPI document (layers/common/bracketflow/openapi.json) from the functions' routes.
openapi: venv
	@$(PY) -m local.openapi

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

fmt: venv
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

## make typecheck: mypy over the layer, the streamer, the paper exchange, the local stack, every function, the benchmarks
## (the files pyproject.toml's [tool.mypy] names).
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

## make account NAME="Asha" [STACK=bracketflow-dev]: a new account, its API key printed once. With STACK, on that
## deployed stack (its outputs name the region, table and pepper; AWS_DEFAULT_REGION finds it); without, on the stack
## TABLE_NAME/AWS_ENDPOINT_URL point at.
account: venv
	@test -n "$(NAME)" || (echo 'usage: make account NAME="Your Name" [STACK=bracketflow-dev]' && exit 2)
	@$(PY) -m bracketflow.admin $(if $(STACK),--stack "$(STACK)") create-account "$(NAME)"

## make token ACCOUNT=<account_id> STRATEGY=<name> [STACK=bracketflow-dev]: a webhook token for one strategy.
token: venv
	@test -n "$(ACCOUNT)" -a -n "$(STRATEGY)" || (echo 'usage: make token ACCOUNT=id STRATEGY=name [STACK=..]' && exit 2)
	@$(PY) -m bracketflow.admin $(if $(STACK),--stack "$(STACK)") create-token "$(ACCOUNT)" "$(STRATEGY)"

## make capital ACCOUNT=<account_id> RUPEES=<amount> [STACK=bracketflow-dev]: the capital risk_percent sizes from.
capital: venv
	@test -n "$(ACCOUNT)" -a -n "$(RUPEES)" || (echo 'usage: make capital ACCOUNT=id RUPEES=500000 [STACK=..]' && exit 2)
	@$(PY) -m bracketflow.admin $(if $(STACK),--stack "$(STACK)") set-capital "$(ACCOUNT)" "$(RUPEES)"

build: sam-venv console
	@$(SAM) build --template template.yaml > .aws-sam-build.log 2>&1 || (cat .aws-sam-build.log; exit 1)
	@echo "sam build: ok (.aws-sam/build)"

## make deploy [ENV=dev|prod] [GUIDED=1]: build, then deploy samconfig.toml's environment (dev is its default section);
## GUIDED=1 asks for every parameter and saves the answers there. No Docker needed: the stack builds the streamer image.
ENV ?= dev
deploy: build
	@case "$(ENV)" in dev|prod) ;; *) echo 'usage: make deploy ENV=dev|prod [GUIDED=1]'; exit 2;; esac
	@$(SAM) deploy --config-env $(if $(filter dev,$(ENV)),default,$(ENV)) $(if $(GUIDED),--guided)

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .ruff_cache .mypy_cache console/node_modules functions/console/static/vendor
