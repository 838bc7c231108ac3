package kbs_test

import "github.com/hashicorp/vault/api"

type (
	apiTokenRequest = api.TokenCreateRequest
	apiMountInput   = api.MountInput
)
