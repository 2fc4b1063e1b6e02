# A thin wrapper around meson + ninja. `make demo` and `make test` install
# what is missing first (scripts/bootstrap.sh), so they work on a fresh
# Debian 12 machine.
BUILD    ?= build
ASAN     ?= build-asan
FUZZ     ?= build-fuzz
prefix   ?= /usr/local
DESTDIR  ?=
MESON_SETUP = meson setup --prefix=$(prefix)

.PHONY: all build demo test unit asan fuzz bench bench-quick install clean deps

all: build

deps:
	@scripts/bootstrap.sh

$(BUILD)/build.ninja:
	@scripts/bootstrap.sh
	$(MESON_SETUP) $(BUILD)

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: deps build
	@scripts/bootstrap.sh --docker
	scripts/demo.sh $(BUILD)

# Every test, including the Docker ones against a real daemon that
# scripts/docker-env.sh makes available (and stops again if it started it).
test: deps build
	@scripts/bootstrap.sh --docker
	scripts/run-tests.sh $(BUILD)

# The same suite under AddressSanitizer and UndefinedBehaviorSanitizer.
asan:
	@scripts/bootstrap.sh --docker
	[ -f $(ASAN)/build.ninja ] || $(MESON_SETUP) $(ASAN) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
	ninja -C $(ASAN)
	scripts/run-tests.sh $(ASAN)

fuzz:
	@scripts/bootstrap.sh
	scripts/build-fuzz.sh $(FUZZ)

bench: build
	@scripts/bootstrap.sh --docker
	scripts/run-bench.sh $(BUILD) full

bench-quick: build
	@scripts/bootstrap.sh --docker
	scripts/run-bench.sh $(BUILD) quick

install: build
	DESTDIR=$(DESTDIR) meson install -C $(BUILD) --no-rebuild

clean:
	rm -rf $(BUILD) $(ASAN) $(FUZZ)
