package localcluster_test

import "github.com/vllm-hpa/vllm-hpa/internal/gmp"

var gmpResource = gmp.Resource
