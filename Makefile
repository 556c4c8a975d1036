# The only commands a user needs: make run, make test, make build.
BUILD_DIR ?= build
ASAN_DIR  ?= build-asan
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
CONFIG    ?=

.PHONY: all build run test test-fast asan bootstrap clean docs cluster cluster-stop

all: build

bootstrap:
	@./scripts/bootstrap

build: bootstrap
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	./$(BUILD_DIR)/apimd $(if $(CONFIG),--config $(CONFIG),)

# Every test, in the normal build and under ASan+UBSan.
test: build
	@cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Asan >/dev/null
	@cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(BUILD_DIR) && ctest --output-on-failure -j 2
	cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j 2

# The normal build only (quicker while developing).
test-fast: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j 2

# A local cluster, one process per node (docs/DEPLOYMENT.md): PostgreSQL,
# two NATS servers, two control-plane nodes (CLUSTER_ARGS=--split: publisher,
# devportal and key manager apart), two Traffic Managers, two gateways and
# the nginx load balancer, under var/cluster. CLUSTER_ARGS=--fresh: empty
# databases.
cluster: build
	@python3 scripts/apimcluster.py start --apimd $(BUILD_DIR)/apimd $(CLUSTER_ARGS)

cluster-stop:
	@python3 scripts/apimcluster.py stop

docs: build
	./$(BUILD_DIR)/apimd --config-docs > docs/CONFIG.md

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR)
