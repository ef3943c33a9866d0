/*
 * FT: the shared disks a backup must see as its primary does
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Both sides open the same images through blkreplay.  A backup that
 * opened another file, another format or another size would replay
 * reads it never makes and then, live, write to the wrong disk; the
 * primary describes its disks once its machine is built, and the backup
 * compares that with its own before it runs anything (docs/shared-disk.md).
 *
 * One line per blkreplay node:
 *
 *   drive <name> ft=on|off chain=<format>/.../<protocol> size=<bytes>
 *         [file=<ino>]
 *
 * <name> is the node's device or node name ("#<n>" for the n-th one when
 * it only has a generated name); file= is, for ft=on, the inode number
 * of a regular image file, which NFS clients see as the server's file
 * id.  Without ft=on each side reads its own copy of the image, as
 * upstream record/replay does, so only the format and size must match.
 */

#include "qemu/osdep.h"
#include <sys/stat.h>
#include "block/block.h"
#include "block/block_int.h"
#include "qapi/util.h"
#include "qobject/qbool.h"
#include "qobject/qdict.h"
#include "qobject/qstring.h"
#include "ft-disks.h"

/* blkreplay's ft option, as given (-drive: a string, QMP: a bool) */
static bool ft_disks_is_ft(BlockDriverState *bs)
{
    QObject *o = bs->options ? qdict_get(bs->options, "ft") : NULL;
    QString *str = qobject_to(QString, o);
    bool on = false;

    if (qobject_to(QBool, o)) {
        return qbool_get_bool(qobject_to(QBool, o));
    }
    return str && qapi_bool_parse("ft", qstring_get_str(str), &on, NULL) &&
           on;
}

char *ft_disks_describe(void)
{
    GString *out = g_string_new("");
    BlockDriverState *bs = NULL;
    int n = 0;

    GLOBAL_STATE_CODE();
    GRAPH_RDLOCK_GUARD_MAINLOOP();

    while ((bs = bdrv_next_all_states(bs))) {
        const char *name;
        BlockDriverState *leaf;
        struct stat st;
        bool ft;

        if (!bs->drv || strcmp(bdrv_get_format_name(bs), "blkreplay") ||
            !bs->file) {
            continue;
        }
        n++;
        ft = ft_disks_is_ft(bs);
        name = bdrv_get_device_or_node_name(bs);
        if (name[0] == '#' || !name[0]) {
            g_string_append_printf(out, "drive #%d", n);
        } else {
            g_string_append_printf(out, "drive %s", name);
        }
        g_string_append_printf(out, " ft=%s chain=", ft ? "on" : "off");
        /* Filters (blkdebug, throttle...) do not change what is read. */
        leaf = bs->file->bs;
        for (;;) {
            if (!leaf->drv || !leaf->drv->is_filter || !leaf->file) {
                g_string_append_printf(out, "%s%s",
                                       leaf->drv ?
                                       bdrv_get_format_name(leaf) : "?",
                                       leaf->file ? "/" : "");
            }
            if (!leaf->file) {
                break;
            }
            leaf = leaf->file->bs;
        }
        g_string_append_printf(out, " size=%" PRId64, bdrv_getlength(bs));
        if (ft && leaf->drv && !strcmp(bdrv_get_format_name(leaf), "file") &&
            stat(leaf->filename, &st) == 0 && S_ISREG(st.st_mode)) {
            g_string_append_printf(out, " file=%" PRIu64,
                                   (uint64_t)st.st_ino);
        }
        g_string_append_c(out, '\n');
    }
    return g_string_free(out, false);
}

/* Value of " key=" in @line, up to the next space, or NULL. */
static char *ft_disks_field(const char *line, const char *key)
{
    g_autofree char *pat = g_strdup_printf(" %s=", key);
    const char *p = strstr(line, pat);
    const char *end;

    if (!p) {
        return NULL;
    }
    p += strlen(pat);
    end = strchr(p, ' ');
    return end ? g_strndup(p, end - p) : g_strdup(p);
}

/* Drive name of @line ("drive NAME ...") */
static char *ft_disks_name(const char *line)
{
    const char *p = line + strlen("drive ");
    const char *end = strchr(p, ' ');

    return end ? g_strndup(p, end - p) : g_strdup(p);
}

static GHashTable *ft_disks_parse(const char *desc)
{
    GHashTable *t = g_hash_table_new_full(g_str_hash, g_str_equal,
                                          g_free, g_free);
    g_auto(GStrv) lines = g_strsplit(desc, "\n", -1);

    for (int i = 0; lines[i]; i++) {
        if (g_str_has_prefix(lines[i], "drive ")) {
            g_hash_table_insert(t, ft_disks_name(lines[i]),
                                g_strdup(lines[i]));
        }
    }
    return t;
}

static void ft_disks_diff(GString *why, const char *name, const char *mine,
                          const char *theirs, const char *key,
                          const char *what)
{
    g_autofree char *a = ft_disks_field(mine, key);
    g_autofree char *b = ft_disks_field(theirs, key);

    if (g_strcmp0(a, b)) {
        g_string_append_printf(why, "%sdrive '%s': %s %s here, %s on the "
                               "primary", why->len ? "; " : "", name, what,
                               a ? a : "unknown", b ? b : "unknown");
    }
}

char *ft_disks_compare(const char *mine, const char *primary)
{
    g_autoptr(GHashTable) here = ft_disks_parse(mine);
    g_autoptr(GHashTable) there = ft_disks_parse(primary);
    GString *why = g_string_new("");
    GHashTableIter it;
    gpointer key, value;

    g_hash_table_iter_init(&it, there);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        const char *line = g_hash_table_lookup(here, key);

        if (!line) {
            g_string_append_printf(why, "%sdrive '%s' of the primary is "
                                   "missing here", why->len ? "; " : "",
                                   (char *)key);
            continue;
        }
        ft_disks_diff(why, key, line, value, "ft", "blkreplay ft");
        ft_disks_diff(why, key, line, value, "chain", "format");
        ft_disks_diff(why, key, line, value, "size", "size");
        ft_disks_diff(why, key, line, value, "file",
                      "a different image file: inode");
    }
    g_hash_table_iter_init(&it, here);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        if (!g_hash_table_contains(there, key)) {
            g_string_append_printf(why, "%sdrive '%s' is not on the primary",
                                   why->len ? "; " : "", (char *)key);
        }
    }
    if (!why->len) {
        g_string_free(why, true);
        return NULL;
    }
    return g_string_free(why, false);
}
