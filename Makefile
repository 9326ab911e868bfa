# Developer targets. The OpenWrt package recipes live in the feed's subdirectories (net/acp,
# lang/python/python-cbor2, lang/python/python-vici, luci/luci-app-acp; see docs/openwrt.md).
# An OpenWrt tree scanning this feed (TOPDIR set) also reads this file: it then defines nothing.
ifneq ($(TOPDIR),)
all:
	@:
else

PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
DEPS_STAMP := .deps-stamp

.PHONY: help deps lint test test-unit test-netns test-vm test-openwrt test-versions demo bench bench-grasp clean

help:
	@echo "make demo       form a real 4-node ACP (BRSKI, secure channels, RPL) in a QEMU guest"
	@echo "make lint       ruff and mypy (configured in pyproject.toml): zero findings or it fails"
	@echo "make test       lint, then all test tiers: unit, netns (root), vm (root, QEMU guest), openwrt (root),"
	@echo "                then test-versions (what CI runs)"
	@echo "make test-unit | test-netns | test-vm   one tier"
	@echo "make test-openwrt  OpenWrt's real ubusd/uci/rpcd/uhttpd (root; builds them once)"
	@echo "make test-versions   unit + netns tiers in venvs pinned to OpenWrt 24.10's and master's libraries"
	@echo "make bench      the benchmarks (figures printed, nothing asserted)"

$(DEPS_STAMP): scripts/install-deps pyproject.toml
	sh scripts/install-deps
	@touch $@

deps: $(DEPS_STAMP)

# What CI runs (.ci/run): every tier with this machine's libraries, then unit + netns again with
# the library versions OpenWrt releases ship.
test: deps lint
	$(PYTEST) tests
	sh scripts/test-versions

lint: deps
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

test-unit: deps
	$(PYTEST) -m unit tests

test-netns: deps
	$(PYTEST) -m netns tests

test-vm: deps
	$(PYTEST) -m vm tests

test-openwrt: deps
	$(PYTEST) -m openwrt tests

# Cached venvs under /var/cache/acp-test-versions (see the script); also the end of `test`.
test-versions: deps
	sh scripts/test-versions

demo: deps
	$(PYTHON) -m acp_openwrt.lab.demo

# Figures, not tests (root; the channel and whole-ACP ones boot the QEMU guest). Writes
# bench/results/*.json and bench/results/summary.md.
bench: deps
	$(PYTHON) bench/run_all.py

bench-grasp: deps
	$(PYTHON) bench/run_all.py --only grasp_codec grasp_io

clean:
	rm -rf $(DEPS_STAMP) build dist src/*.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
endif
