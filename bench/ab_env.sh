# ab_env.sh — sourced by the A/B scripts (gpu_presets_ab.sh, gpu_bin_ab.sh): one settings group as
# environment assignments, a line each. Settings are joined by ',' ("-" is no setting); a NAME
# without BORA_ is BORA_MEGA_NAME, one with it is taken as written (e.g. BORA_DECODE=persistent).
envs_of() {
    [ "$1" = - ] && return
    local kv
    for kv in $(echo "$1" | tr ',' ' '); do
        case $kv in BORA_*) echo "$kv" ;; *) echo "BORA_MEGA_$kv" ;; esac
    done
}
