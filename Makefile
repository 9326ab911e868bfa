# Two faces, one file (see DESIGN.md §3):
# - inside an OpenWrt build tree (TOPDIR is set), the package recipe in openwrt.mk;
# - everywhere else, the developer targets below.
ifneq ($(TOPDIR),)
include $(CURDIR)/openwrt.mk
else

PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
DEPS_STAMP := .deps-stamp

.PHONY: help deps test test-unit test-netns test-vm demo clean

help:
	@echo "make demo       build a small ACP lab in namespaces and show it"
	@echo "make test       all test tiers: unit, netns (root), vm (root, QEMU guest)"
	@echo "make test-unit | test-netns | test-vm   one tier"

$(DEPS_STAMP): scripts/install-deps pyproject.toml
	sh scripts/install-deps
	@touch $@

deps: $(DEPS_STAMP)

test: deps
	$(PYTEST) tests

test-unit: deps
	$(PYTEST) -m unit tests

test-netns: deps
	$(PYTEST) -m netns tests

test-vm: deps
	$(PYTEST) -m vm tests

demo: deps
	$(PYTHON) -m acp_openwrt.lab.demo

clean:
	rm -rf $(DEPS_STAMP) build dist src/*.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
endif
