#!/bin/sh
# Prints the package version of the checkout, valid for opkg and for apk alike:
#   HEAD tagged vX.Y.Z           -> X.Y.Z-r1
#   N commits after tag vX.Y.Z   -> X.Y.Z-r(N+1)
#   no tag at all                -> 0.0.0-r(number of commits)
#   not a git checkout           -> 0.0.0-r0
# Every later build sorts higher under both version rules (opkg compares the release as
# "rN" digit by digit, apk as its -rN), and the first build of a new tag sorts above every
# build of the previous one. '_' is left out: it separates the fields of an .ipk name.
# shellcheck shell=dash
set -u
dir="${1:-.}"
if desc=$(git -C "$dir" describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
	# vX.Y.Z-N-gHASH; the tag itself may not contain '-' (checked below).
	hash_part="${desc##*-}"
	rest="${desc%-"$hash_part"}"
	count="${rest##*-}"
	tag="${rest%-"$count"}"
	base="${tag#v}"
	case "$base" in
	*[!0-9.]* | .* | *. | *..* | "")
		echo "version.sh: tag $tag is not vX.Y.Z (digits and dots)" >&2
		exit 1
		;;
	esac
	echo "$base-r$((count + 1))"
elif count=$(git -C "$dir" rev-list --count HEAD 2>/dev/null); then
	echo "0.0.0-r$count"
else
	echo "0.0.0-r0"
fi
