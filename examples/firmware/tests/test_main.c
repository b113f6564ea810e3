/* Host tests of the firmware, writing a JUnit report (argv[1]).
 * radio_link_retry stands for an intermittent failure: it fails on the
 * pipeline's first attempt (UPDRAFT_ATTEMPT=1) and passes on the retry, so
 * the pipeline marks it flaky and quarantines it instead of blocking. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/crc.h"

struct result { const char *name; const char *failure; };

static const char *crc_check_value(void)
{
    const char *s = "123456789";
    return crc16((const unsigned char *)s, strlen(s)) == 0x29B1 ? NULL : "crc16(\"123456789\") != 0x29B1";
}

static const char *crc_empty(void)
{
    return crc16((const unsigned char *)"", 0) == 0xFFFF ? NULL : "crc16 of nothing != 0xFFFF";
}

static const char *radio_link_retry(void)
{
    const char *attempt = getenv("UPDRAFT_ATTEMPT");
    if (attempt && strcmp(attempt, "1") == 0)
        return "no ack from the peer within 200 ms (intermittent)";
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s FAMILY REPORT.xml\n", argv[0]);
        return 2;
    }
    struct result r[] = {
        { "crc_check_value", crc_check_value() },
        { "crc_empty", crc_empty() },
        { "radio_link_retry", radio_link_retry() },
    };
    int n = sizeof r / sizeof r[0], failures = 0;
    for (int i = 0; i < n; i++)
        failures += r[i].failure != NULL;
    FILE *f = fopen(argv[2], "w");
    if (!f) {
        perror(argv[2]);
        return 2;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    fprintf(f, "<testsuite name=\"%s-host\" tests=\"%d\" failures=\"%d\">\n", argv[1], n, failures);
    for (int i = 0; i < n; i++) {
        fprintf(f, "<testcase classname=\"%s.host\" name=\"%s\" time=\"0.001\"", argv[1], r[i].name);
        if (r[i].failure)
            fprintf(f, "><failure message=\"%s\"/></testcase>\n", r[i].failure);
        else
            fprintf(f, "/>\n");
    }
    fprintf(f, "</testsuite>\n</testsuites>\n");
    fclose(f);
    printf("%d tests, %d failed\n", n, failures);
    return failures ? 1 : 0;
}
