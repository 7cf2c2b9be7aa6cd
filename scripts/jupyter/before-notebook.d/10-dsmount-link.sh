#!/usr/bin/env bash
# shellcheck shell=bash
#
# Jupyter docker-stacks hook: link ~/datastores -> /datastores before the notebook server starts.
#
# Install: COPY this file to /usr/local/bin/before-notebook.d/ in an image built FROM a
# jupyter/docker-stacks image. start.sh *sources* every *.sh there (as root when the container
# starts as root, else as the notebook user), so this file must never `exit`, never leave
# `set -e` or variables behind, and always end with status 0: a refused link is logged as a
# WARNING and the notebook still starts.
#
# The container needs the host's /datastores bind-mounted with slave propagation, so a remount
# on the host (dsmount restart) reaches running containers:
#   docker run -v /datastores:/datastores:rslave ...
#   Kubernetes: hostPath volume + volumeMounts[].mountPropagation: HostToContainer
#
# Uses `dsmount link-home` when the dsmount CLI is installed in the image; otherwise plain ln -s
# with the same rules: an existing link to the target is kept; a real directory or file, or a
# symlink pointing elsewhere, is left alone unless DSMOUNT_LINK_FORCE=1, and even then only a
# foreign symlink, an empty directory or an empty file is replaced (never the user's data).
#
# Environment:
#   NB_USER              notebook user (docker-stacks sets it; default jovyan)
#   DSMOUNT_LINK=0       skip this hook
#   DSMOUNT_LINK_TARGET  link target (default /datastores)
#   DSMOUNT_LINK_HOME    home directory holding the link (default /home/$NB_USER)
#   DSMOUNT_LINK_FORCE=1 replace a foreign symlink / empty directory / empty file

_dsmount_link_log() {
    printf '%s: dsmount-link: %s\n' "${1}" "${*:2}" >&2
}

# As root, give the link to the notebook user (symlink ownership is cosmetic for the user, but a
# root-owned entry in their home confuses tools). Never fails the hook.
_dsmount_link_chown() {
    local user="${1}" link="${2}" gid
    if gid="$(id -g "${user}" 2>/dev/null)" && chown -h "${user}:${gid}" "${link}"; then
        return 0
    fi
    _dsmount_link_log WARNING "could not give ${link} to ${user}"
    return 0
}

_dsmount_link_home() {
    local user="${NB_USER:-jovyan}"
    local home="${DSMOUNT_LINK_HOME:-/home/${user}}"
    local target="${DSMOUNT_LINK_TARGET:-/datastores}"
    local force="${DSMOUNT_LINK_FORCE:-0}"
    local link="${home}/datastores"
    local as_root=0 current
    if [[ "$(id -u)" == 0 ]]; then as_root=1; fi

    if [[ "${DSMOUNT_LINK:-1}" == 0 ]]; then
        _dsmount_link_log INFO "DSMOUNT_LINK=0: not linking ${link}"
        return 0
    fi
    if [[ ! -d "${home}" ]]; then
        _dsmount_link_log WARNING "home ${home} does not exist; not linking"
        return 0
    fi
    if [[ ! -e "${target}" ]]; then
        _dsmount_link_log WARNING "${target} is not present in this container" \
            "(bind-mount the host's ${target} with rslave propagation); not linking ${link}"
        return 0
    fi

    if command -v dsmount >/dev/null 2>&1; then
        local args=(link-home --home "${home}" --target "${target}")
        # As root, --user makes the notebook user own the link.
        if ((as_root)); then args+=(--user "${user}"); fi
        if [[ "${force}" == 1 ]]; then args+=(--force); fi
        if ! dsmount "${args[@]}"; then
            _dsmount_link_log WARNING "dsmount link-home failed (see above); ${link} not linked"
        fi
        return 0
    fi

    if [[ -L "${link}" ]]; then
        current="$(readlink "${link}")"
        if [[ "${current}" == "${target}" ]]; then
            if ((as_root)); then _dsmount_link_chown "${user}" "${link}"; fi
            _dsmount_link_log INFO "${link} already points to ${target}"
            return 0
        fi
        if [[ "${force}" != 1 ]]; then
            _dsmount_link_log WARNING "${link} points to ${current}, not ${target};" \
                "set DSMOUNT_LINK_FORCE=1 to replace that symlink"
            return 0
        fi
        rm -f -- "${link}"
    elif [[ -d "${link}" ]]; then
        if [[ "${force}" != 1 ]]; then
            _dsmount_link_log WARNING "${link} is a real directory; move it away" \
                "(or set DSMOUNT_LINK_FORCE=1 if it is empty)"
            return 0
        fi
        if ! rmdir -- "${link}" 2>/dev/null; then
            _dsmount_link_log WARNING "${link} is a directory with files in it; refusing to" \
                "replace it even with DSMOUNT_LINK_FORCE=1 (that would delete the user's data)"
            return 0
        fi
    elif [[ -e "${link}" ]]; then
        if [[ "${force}" != 1 ]]; then
            _dsmount_link_log WARNING "${link} already exists; move it away" \
                "(or set DSMOUNT_LINK_FORCE=1 if it is an empty file)"
            return 0
        fi
        if [[ ! -f "${link}" || -s "${link}" ]]; then
            _dsmount_link_log WARNING "${link} is not an empty file; refusing to replace it" \
                "even with DSMOUNT_LINK_FORCE=1 (that would delete the user's data)"
            return 0
        fi
        rm -f -- "${link}"
    fi

    if ! ln -s -- "${target}" "${link}"; then
        _dsmount_link_log WARNING "could not create ${link}"
        return 0
    fi
    # The hook runs before the notebook server, so no user process can race this chown.
    if ((as_root)); then _dsmount_link_chown "${user}" "${link}"; fi
    _dsmount_link_log INFO "linked ${link} -> ${target}"
    return 0
}

_dsmount_link_home
unset -f _dsmount_link_home _dsmount_link_log _dsmount_link_chown
true
