#!/usr/bin/env bash
# Lints template.yaml with cfn-lint and `sam validate --lint`.
set -euo pipefail
source "$(dirname "$0")/sam-tools.sh"
cd "$SAM_ROOT"
cfn-lint template.yaml
# As deployed behind a firewall: in private subnets, with a NAT gateway and endpoints.
cfn-lint template.yaml --parameters VpcSubnetIds=subnet-0a1b2c3d4e5f60718,subnet-0a1b2c3d4e5f60719 \
  VpcSecurityGroupIds=sg-0a1b2c3d4e5f60718 VpcId=vpc-0a1b2c3d4e5f60718 PrivateRouteTableId=rtb-0a1b2c3d4e5f60718 \
  NatGatewaySubnetId=subnet-0a1b2c3d4e5f60720 CreateVpcEndpoints=true
sam validate --lint --template template.yaml >/dev/null
echo "template.yaml: cfn-lint (with and without the VPC parameters) and sam validate --lint pass"
