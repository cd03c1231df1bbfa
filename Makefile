# Postern — the two commands of the README:
#   make run    build and run a demo instance (installs dependencies)
#   make test   the whole test suite, also under ASan+UBSan, plus a short
#               libFuzzer run of every parser (installs dependencies)

BUILD      ?= build
ASAN_BUILD ?= build-asan
PYTEST     = /usr/bin/python3 -m pytest

FUZZ_SECONDS ?= 15

.PHONY: all deps build run test unit integration asan fuzz clean

all: build

deps:
	@./scripts/deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=debugoptimized

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

run: build
	./scripts/run-demo.sh

unit: build
	meson test -C $(BUILD) --print-errorlogs

integration: build
	POSTERN_BIN=$(CURDIR)/$(BUILD)/postern $(PYTEST) -q tests/integration

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 meson test -C $(ASAN_BUILD) --print-errorlogs
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
		POSTERN_BIN=$(CURDIR)/$(ASAN_BUILD)/postern $(PYTEST) -q tests/integration

fuzz: deps
	./scripts/fuzz.sh $(FUZZ_SECONDS)

test: unit integration asan fuzz

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
