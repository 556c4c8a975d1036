"""Admin v4 REST API: rate-limit policies of every level, deny policies
(blocking conditions), gateway environments, their defaults, validation
messages, authorization by role, and the change sequence that gateways and
the Traffic Manager follow."""

import json
import os
import re
import secrets
import subprocess
import threading
import unittest

import apimtest

A = "/api/am/admin/v4"
P = A + "/throttling/policies"
DENY = A + "/throttling/deny-policies"
DENY1 = A + "/throttling/deny-policy/"
ENV = A + "/environments"
UNKNOWN_ID = "00000000-0000-4000-8000-00000000abcd"
TIME_UNITS = ["sec", "min", "hour", "day", "week", "month", "year"]


def uniq(prefix):
    return "%s%s" % (prefix, secrets.token_hex(3))


def rc_limit(count, unit="min", unit_time=1):
    return {"type": "REQUESTCOUNTLIMIT",
            "requestCount": {"timeUnit": unit, "unitTime": unit_time, "requestCount": count}}


def bw_limit(amount, data_unit="MB", unit="min", unit_time=1):
    return {"type": "BANDWIDTHLIMIT",
            "bandwidth": {"timeUnit": unit, "unitTime": unit_time, "dataAmount": amount,
                          "dataUnit": data_unit}}


def app_body(name, limit=None, **kw):
    b = {"policyName": name, "displayName": name, "description": "test policy",
         "defaultLimit": limit or rc_limit(10)}
    b.update(kw)
    return b


def sub_body(name, limit=None, **kw):
    return app_body(name, limit, **kw)


def adv_body(name, groups=None, limit=None, **kw):
    b = app_body(name, limit, **kw)
    if groups is not None:
        b["conditionalGroups"] = groups
    return b


def custom_body(name, template="$userId", query=None, **kw):
    b = {"policyName": name, "description": "custom rule",
         "siddhiQuery": query or ("FROM RequestStream SELECT userId, true AS isEligible, "
                                  "str:concat(userId, '') AS throttleKey INSERT INTO "
                                  "EligibilityStream; FROM EligibilityStream"
                                  "[isEligible==true]#throttler:timeBatch(1 min) SELECT "
                                  "throttleKey, (count(userId) >= 5) as isThrottled, "
                                  "expiryTimeStamp group by throttleKey INSERT ALL EVENTS "
                                  "into ResultStream;"),
         "keyTemplate": template}
    b.update(kw)
    return b


def by_name(items, name):
    for it in items:
        if it.get("policyName") == name or it.get("name") == name:
            return it
    return None


def srv():
    return apimtest.shared()


class AdminCase(unittest.TestCase):
    """Helpers shared by the admin tests."""

    @property
    def c(self):
        return srv().client()

    def assertError(self, r, status, *needles):
        """r is an error with the reference body whose description says each needle."""
        self.assertEqual(r.status, status, r)
        body = r.json
        self.assertIsInstance(body, dict, r)
        self.assertEqual(str(body.get("code")), str(status), r)
        desc = body.get("description") or ""
        for n in needles:
            self.assertIn(n, desc, r)
        return desc

    def create(self, level, body, status=201):
        r = self.c.post("%s/%s" % (P, level), json=body)
        self.assertEqual(r.status, status, r)
        return r.json

    def list_all(self, path, **query):
        r = self.c.get(path, query=query or None)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["count"], len(r.json["list"]), r)
        self.assertIn("pagination", r.json)
        return r.json["list"]


# ---------------------------------------------------------------- defaults

class DefaultsTest(AdminCase):
    """The reference's default tiers and the Default environment exist after
    the first start."""

    def test_default_application_policies(self):
        items = self.list_all(P + "/application")
        want = {"50PerMin": (50, "Allows 50 request per minute"),
                "20PerMin": (20, "Allows 20 request per minute"),
                "10PerMin": (10, "Allows 10 request per minute"),
                "Unlimited": (2147483647, "Allows unlimited requests")}
        for name, (count, desc) in want.items():
            p = by_name(items, name)
            self.assertIsNotNone(p, "%s missing in %r" % (name, items))
            self.assertEqual(p["type"], "ApplicationThrottlePolicy")
            self.assertEqual(p["description"], desc)
            self.assertEqual(p["displayName"], name)
            self.assertTrue(p["isDeployed"])
            self.assertEqual(p["defaultLimit"]["type"], "REQUESTCOUNTLIMIT")
            self.assertEqual(p["defaultLimit"]["requestCount"],
                             {"timeUnit": "min", "unitTime": 1, "requestCount": count})

    def test_default_subscription_policies(self):
        items = self.list_all(P + "/subscription")
        want = {"Gold": (5000, "Allows 5000 requests per minute"),
                "Silver": (2000, "Allows 2000 requests per minute"),
                "Bronze": (1000, "Allows 1000 requests per minute"),
                "Unauthenticated": (500, "Allows 500 request(s) per minute"),
                "Unlimited": (2147483647, "Allows unlimited requests")}
        for name, (count, desc) in want.items():
            p = by_name(items, name)
            self.assertIsNotNone(p, "%s missing in %r" % (name, items))
            self.assertEqual(p["type"], "SubscriptionThrottlePolicy")
            self.assertEqual(p["description"], desc)
            self.assertEqual(p["defaultLimit"]["requestCount"]["requestCount"], count)
            self.assertEqual(p["defaultLimit"]["requestCount"]["timeUnit"], "min")
            self.assertIs(p["stopOnQuotaReach"], True)
            self.assertEqual(p["billingPlan"], "FREE")
            self.assertEqual(p["rateLimitCount"], 0)
            self.assertEqual(p["customAttributes"], [])

    def test_default_advanced_policies(self):
        items = self.list_all(P + "/advanced")
        want = {"50KPerMin": (50000, "Allows 50000 requests per minute"),
                "20KPerMin": (20000, "Allows 20000 requests per minute"),
                "10KPerMin": (10000, "Allows 10000 requests per minute"),
                "Unlimited": (2147483647, "Allows unlimited requests")}
        for name, (count, desc) in want.items():
            p = by_name(items, name)
            self.assertIsNotNone(p, "%s missing in %r" % (name, items))
            self.assertEqual(p["type"], "AdvancedThrottlePolicy")
            self.assertEqual(p["description"], desc)
            self.assertEqual(p["defaultLimit"]["requestCount"]["requestCount"], count)
            self.assertEqual(p["conditionalGroups"], [])

    def test_default_environment(self):
        items = self.list_all(ENV)
        d = by_name(items, "Default")
        self.assertIsNotNone(d, items)
        self.assertIs(d["isReadOnly"], True)
        self.assertEqual(d["type"], "hybrid")
        self.assertEqual(d["provider"], "wso2")
        self.assertEqual(d["displayName"], "Default")
        off = int(srv().effective_conf["server"]["port_offset"])
        vh = d["vhosts"][0]
        self.assertEqual(vh["httpPort"], 8280 + off)
        self.assertEqual(vh["httpsPort"], 8243 + off)
        self.assertEqual(vh["host"], "localhost")
        r = self.c.get(ENV + "/" + d["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, d)

    def test_unlimited_cannot_be_deleted(self):
        for level in ("application", "subscription", "advanced"):
            p = by_name(self.list_all(P + "/" + level), "Unlimited")
            r = self.c.delete("%s/%s/%s" % (P, level, p["policyId"]))
            self.assertError(r, 403, "Unlimited", "cannot be deleted")
            r = self.c.get("%s/%s/%s" % (P, level, p["policyId"]))
            self.assertEqual(r.status, 200, r)

    def test_search_by_type(self):
        r = self.c.get(P + "/search", query={"query": "type:sub"})
        self.assertEqual(r.status, 200, r)
        names = {x["policyName"] for x in r.json["list"]}
        self.assertTrue({"Gold", "Silver", "Bronze", "Unlimited"} <= names, r)
        self.assertTrue(all(x["type"] == "sub" for x in r.json["list"]), r)
        r = self.c.get(P + "/search", query={"query": "type:nonsense"})
        self.assertError(r, 400, "type:app")


class SeedOnceTest(AdminCase):
    """Defaults are created once per database: a deleted default stays
    deleted across restarts, and nothing is duplicated."""

    def test_restart_keeps_deletions_and_adds_nothing(self):
        with apimtest.ApimServer() as s:
            c = s.client()
            items = c.get(P + "/subscription").json["list"]
            bronze = by_name(items, "Bronze")
            r = c.delete("%s/subscription/%s" % (P, bronze["policyId"]))
            self.assertEqual(r.status, 200, r)
            envs = c.get(ENV).json["list"]
            s.restart()
            c = s.client()
            after = c.get(P + "/subscription").json["list"]
            self.assertIsNone(by_name(after, "Bronze"), after)
            self.assertEqual(len(after), len(items) - 1, after)
            self.assertEqual([p["policyId"] for p in after],
                             [p["policyId"] for p in items if p["policyName"] != "Bronze"])
            self.assertEqual(len(c.get(P + "/application").json["list"]), 4)
            self.assertEqual(c.get(ENV).json["list"], envs)


# ------------------------------------------------------------- application

class ApplicationPolicyTest(AdminCase):

    def test_crud(self):
        name = uniq("app")
        p = self.create("application", app_body(name, rc_limit(100)))
        self.assertTrue(re.fullmatch(r"[0-9a-f-]{36}", p["policyId"]), p)
        self.assertEqual(p["policyName"], name)
        self.assertEqual(p["type"], "ApplicationThrottlePolicy")
        self.assertTrue(p["isDeployed"])
        self.assertEqual(p["defaultLimit"]["requestCount"]["requestCount"], 100)
        self.assertIsNone(p["defaultLimit"]["bandwidth"])
        url = "%s/application/%s" % (P, p["policyId"])

        r = self.c.get(url)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, p)
        self.assertIsNotNone(by_name(self.list_all(P + "/application"), name))

        body = dict(r.json)
        body["defaultLimit"] = rc_limit(250, "hour", 2)
        body["description"] = "changed"
        r = self.c.put(url, json=body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["defaultLimit"]["requestCount"],
                         {"timeUnit": "hour", "unitTime": 2, "requestCount": 250})
        r = self.c.get(url)
        self.assertEqual(r.json["description"], "changed")
        self.assertEqual(r.json["policyId"], p["policyId"])

        r = self.c.delete(url)
        self.assertEqual(r.status, 200, r)
        self.assertError(self.c.get(url), 404)
        self.assertIsNone(by_name(self.list_all(P + "/application"), name))

    def test_bandwidth_limit(self):
        for unit in ("KB", "MB", "GB"):
            p = self.create("application", app_body(uniq("bw"), bw_limit(512, unit)))
            self.assertEqual(p["defaultLimit"]["type"], "BANDWIDTHLIMIT")
            self.assertEqual(p["defaultLimit"]["bandwidth"],
                             {"timeUnit": "min", "unitTime": 1, "dataAmount": 512,
                              "dataUnit": unit})
            self.assertIsNone(p["defaultLimit"]["requestCount"])

    def test_every_time_unit_is_accepted(self):
        for unit in TIME_UNITS:
            p = self.create("application", app_body(uniq("tu"), rc_limit(5, unit, 3)))
            self.assertEqual(p["defaultLimit"]["requestCount"]["timeUnit"], unit)
            self.assertEqual(p["defaultLimit"]["requestCount"]["unitTime"], 3)

    def test_burst_limit(self):
        p = self.create("application", app_body(uniq("burst"), rc_limit(1000),
                                                burstLimit={"rateLimitCount": 10,
                                                            "rateLimitTimeUnit": "sec"}))
        self.assertEqual(p["burstLimit"], {"rateLimitCount": 10, "rateLimitTimeUnit": "sec"})
        r = self.c.post(P + "/application", json=app_body(uniq("burst"),
                                                          burstLimit={"rateLimitCount": 10}))
        self.assertError(r, 400, "burstLimit.rateLimitTimeUnit", "sec, min")
        r = self.c.post(P + "/application", json=app_body(
            uniq("burst"), burstLimit={"rateLimitCount": 10, "rateLimitTimeUnit": "hour"}))
        self.assertError(r, 400, "burstLimit.rateLimitTimeUnit", "sec, min", "hour")

    def test_duplicate_name_is_409(self):
        name = uniq("dup")
        self.create("application", app_body(name))
        r = self.c.post(P + "/application", json=app_body(name))
        self.assertError(r, 409, name, "already exists")
        # the same name on another level is fine
        self.create("subscription", sub_body(name))

    def test_concurrent_creates_of_one_name(self):
        """Racing creates of one name: exactly one wins, the others get 409."""
        name = uniq("race")
        statuses = []

        def post():
            r = srv().client().post(P + "/application", json=app_body(name))
            statuses.append(r.status)

        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(statuses), [201] + [409] * 7, statuses)
        self.assertEqual(len([p for p in self.list_all(P + "/application")
                              if p["policyName"] == name]), 1)

    def test_unknown_ids_are_404(self):
        for pid in (UNKNOWN_ID, "not-a-uuid"):
            url = "%s/application/%s" % (P, pid)
            self.assertError(self.c.get(url), 404, pid)
            self.assertError(self.c.put(url, json=app_body("x")), 404)
            self.assertError(self.c.delete(url), 404)
        # an id of another level is not found on this one
        gold = by_name(self.list_all(P + "/subscription"), "Gold")
        self.assertError(self.c.get("%s/application/%s" % (P, gold["policyId"])), 404)

    def test_put_cannot_rename(self):
        p = self.create("application", app_body(uniq("ren")))
        body = dict(p, policyName=uniq("other"))
        r = self.c.put("%s/application/%s" % (P, p["policyId"]), json=body)
        self.assertError(r, 400, "policyName", "cannot be changed")
        # without a policyName the current one stays
        body.pop("policyName")
        r = self.c.put("%s/application/%s" % (P, p["policyId"]), json=body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["policyName"], p["policyName"])

    def test_if_match(self):
        p = self.create("application", app_body(uniq("etag")))
        url = "%s/application/%s" % (P, p["policyId"])
        r = self.c.get(url)
        etag = r.headers.get("etag")
        self.assertTrue(etag, r.headers)
        r = self.c.put(url, json=p, headers={"If-Match": '"stale"'})
        self.assertEqual(r.status, 412, r)
        r = self.c.put(url, json=dict(p, description="fresh"), headers={"If-Match": etag})
        self.assertEqual(r.status, 200, r)
        # the ETag changed with the body: the old one no longer matches
        r = self.c.put(url, json=p, headers={"If-Match": etag})
        self.assertEqual(r.status, 412, r)


# ------------------------------------------------------------ subscription

class SubscriptionPolicyTest(AdminCase):

    def test_full_policy_round_trip(self):
        name = uniq("sub")
        body = sub_body(name, rc_limit(300), rateLimitCount=5, rateLimitTimeUnit="sec",
                        stopOnQuotaReach=False, billingPlan="COMMERCIAL",
                        customAttributes=[{"name": "tier", "value": "premium"}],
                        permissions={"permissionType": "DENY", "roles": ["Internal/subscriber"]},
                        graphQLMaxComplexity=40, graphQLMaxDepth=7)
        p = self.create("subscription", body)
        self.assertEqual(p["type"], "SubscriptionThrottlePolicy")
        self.assertEqual(p["rateLimitCount"], 5)
        self.assertEqual(p["rateLimitTimeUnit"], "sec")
        self.assertIs(p["stopOnQuotaReach"], False)
        self.assertEqual(p["billingPlan"], "COMMERCIAL")
        self.assertEqual(p["customAttributes"], [{"name": "tier", "value": "premium"}])
        self.assertEqual(p["permissions"],
                         {"permissionType": "DENY", "roles": ["Internal/subscriber"]})
        self.assertEqual(p["graphQLMaxComplexity"], 40)
        self.assertEqual(p["graphQLMaxDepth"], 7)
        url = "%s/subscription/%s" % (P, p["policyId"])
        # what GET returns (nulls included) can be sent back as it is
        got = self.c.get(url).json
        self.assertEqual(got, p)
        r = self.c.put(url, json=got)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, p)
        self.assertEqual(self.c.delete(url).status, 200)

    def test_defaults_of_optional_fields(self):
        p = self.create("subscription", sub_body(uniq("subd")))
        self.assertIs(p["stopOnQuotaReach"], True)
        self.assertEqual(p["billingPlan"], "FREE")
        self.assertEqual(p["rateLimitCount"], 0)
        self.assertIsNone(p["rateLimitTimeUnit"])
        self.assertIsNone(p["permissions"])

    def test_event_count_limit(self):
        lim = {"type": "EVENTCOUNTLIMIT",
               "eventCount": {"timeUnit": "day", "unitTime": 1, "eventCount": 10000}}
        p = self.create("subscription", sub_body(uniq("async"), lim))
        self.assertEqual(p["defaultLimit"]["eventCount"],
                         {"timeUnit": "day", "unitTime": 1, "eventCount": 10000})

    def test_bad_subscription_fields(self):
        cases = [
            ({"billingPlan": "GRATIS"}, ["billingPlan", "FREE, COMMERCIAL", "GRATIS"]),
            ({"rateLimitCount": 5}, ["rateLimitTimeUnit", "sec, min"]),
            ({"rateLimitCount": -1}, ["rateLimitCount", "between 0"]),
            ({"stopOnQuotaReach": "yes"}, ["stopOnQuotaReach", "boolean"]),
            ({"permissions": {"permissionType": "MAYBE", "roles": ["a"]}},
             ["permissions.permissionType", "ALLOW, DENY"]),
            ({"permissions": {"permissionType": "ALLOW", "roles": []}},
             ["permissions.roles", "at least one"]),
            ({"customAttributes": [{"name": "x"}]}, ["customAttributes[0].value", "required"]),
        ]
        for extra, needles in cases:
            r = self.c.post(P + "/subscription", json=sub_body(uniq("bad"), **extra))
            self.assertError(r, 400, *needles)


# ---------------------------------------------------------------- advanced

class AdvancedPolicyTest(AdminCase):

    def groups(self):
        return [
            {"description": "office IPv4",
             "conditions": [{"type": "IPCONDITION", "invertCondition": False,
                             "ipCondition": {"ipConditionType": "IPSPECIFIC",
                                             "specificIP": "10.0.0.7"}}],
             "limit": rc_limit(100)},
            {"description": "IPv6 range, inverted",
             "conditions": [{"type": "IPCONDITION", "invertCondition": True,
                             "ipCondition": {"ipConditionType": "IPRANGE",
                                             "startingIP": "2001:db8::1",
                                             "endingIP": "2001:db8::ffff"}}],
             "limit": bw_limit(10, "MB")},
            {"description": "header",
             "conditions": [{"type": "HEADERCONDITION",
                             "headerCondition": {"headerName": "User-Agent",
                                                 "headerValue": "curl.*"}}],
             "limit": rc_limit(5)},
            {"description": "query and claim together",
             "conditions": [{"type": "QUERYPARAMETERCONDITION",
                             "queryParameterCondition": {"parameterName": "plan",
                                                         "parameterValue": "free"}},
                            {"type": "JWTCLAIMSCONDITION",
                             "jwtClaimsCondition": {"claimUrl": "http://wso2.org/claims/role",
                                                    "attribute": "guest"}}],
             "limit": rc_limit(20, "hour")},
        ]

    def test_conditional_groups_of_every_condition_type(self):
        p = self.create("advanced", adv_body(uniq("adv"), self.groups(), rc_limit(1000)))
        self.assertEqual(p["type"], "AdvancedThrottlePolicy")
        g = p["conditionalGroups"]
        self.assertEqual(len(g), 4)
        c0 = g[0]["conditions"][0]
        self.assertEqual(c0["type"], "IPCONDITION")
        self.assertIs(c0["invertCondition"], False)
        self.assertEqual(c0["ipCondition"]["ipConditionType"], "IPSPECIFIC")
        self.assertEqual(c0["ipCondition"]["specificIP"], "10.0.0.7")
        self.assertIsNone(c0["headerCondition"])
        c1 = g[1]["conditions"][0]
        self.assertIs(c1["invertCondition"], True)
        self.assertEqual(c1["ipCondition"]["startingIP"], "2001:db8::1")
        self.assertEqual(c1["ipCondition"]["endingIP"], "2001:db8::ffff")
        self.assertEqual(g[1]["limit"]["type"], "BANDWIDTHLIMIT")
        self.assertEqual(g[2]["conditions"][0]["headerCondition"],
                         {"headerName": "User-Agent", "headerValue": "curl.*"})
        self.assertEqual(g[3]["conditions"][0]["queryParameterCondition"],
                         {"parameterName": "plan", "parameterValue": "free"})
        self.assertEqual(g[3]["conditions"][1]["jwtClaimsCondition"],
                         {"claimUrl": "http://wso2.org/claims/role", "attribute": "guest"})
        self.assertEqual(g[3]["limit"]["requestCount"]["timeUnit"], "hour")
        url = "%s/advanced/%s" % (P, p["policyId"])
        got = self.c.get(url).json
        self.assertEqual(got, p)
        # PUT with fewer groups replaces them
        got["conditionalGroups"] = got["conditionalGroups"][:1]
        r = self.c.put(url, json=got)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.c.get(url).json["conditionalGroups"]), 1)

    def bad_group(self, cond, needles):
        body = adv_body(uniq("advbad"), [{"conditions": [cond], "limit": rc_limit(1)}])
        r = self.c.post(P + "/advanced", json=body)
        return self.assertError(r, 400, *needles)

    def test_bad_conditions(self):
        ip = "conditionalGroups[0].conditions[0].ipCondition"
        self.bad_group({"type": "IPCONDITION",
                        "ipCondition": {"ipConditionType": "IPSPECIFIC", "specificIP": "10.0.0"}},
                       [ip + ".specificIP", "IPv4", "10.0.0"])
        self.bad_group({"type": "IPCONDITION",
                        "ipCondition": {"ipConditionType": "IPRANGE", "startingIP": "10.0.0.9",
                                        "endingIP": "10.0.0.1"}},
                       [ip + ".startingIP", "must not be greater"])
        self.bad_group({"type": "IPCONDITION",
                        "ipCondition": {"ipConditionType": "IPRANGE", "startingIP": "10.0.0.1",
                                        "endingIP": "2001:db8::1"}},
                       ["both be IPv4 or both be IPv6"])
        self.bad_group({"type": "IPCONDITION",
                        "ipCondition": {"ipConditionType": "SUBNET", "specificIP": "10.0.0.1"}},
                       [ip + ".ipConditionType", "IPSPECIFIC, IPRANGE"])
        self.bad_group({"type": "HEADERCONDITION"},
                       ["conditionalGroups[0].conditions[0].headerCondition", "required"])
        self.bad_group({"type": "HEADERCONDITION", "headerCondition": {"headerName": "X-A"}},
                       ["headerCondition.headerValue", "required"])
        self.bad_group({"type": "COOKIECONDITION"},
                       ["conditions[0].type", "IPCONDITION, HEADERCONDITION, "
                                              "QUERYPARAMETERCONDITION, JWTCLAIMSCONDITION"])
        self.bad_group({"type": "JWTCLAIMSCONDITION",
                        "jwtClaimsCondition": {"claimUrl": "x", "attribute": "y", "z": 1}},
                       ["Unknown field", "jwtClaimsCondition.z"])
        r = self.c.post(P + "/advanced", json=adv_body(uniq("advbad"), [
            {"conditions": [], "limit": rc_limit(1)}]))
        self.assertError(r, 400, "conditionalGroups[0].conditions", "at least one")
        r = self.c.post(P + "/advanced", json=adv_body(uniq("advbad"), [
            {"conditions": [{"type": "HEADERCONDITION",
                             "headerCondition": {"headerName": "a", "headerValue": "b"}}]}]))
        self.assertError(r, 400, "conditionalGroups[0].limit", "required")


# ------------------------------------------------------------------ custom

class CustomRuleTest(AdminCase):

    def test_crud_with_key_template(self):
        name = uniq("rule")
        p = self.create("custom", custom_body(name, "$userId:$apiContext:$apiVersion"))
        self.assertEqual(p["type"], "CustomRule")
        self.assertEqual(p["keyTemplate"], "$userId:$apiContext:$apiVersion")
        self.assertIn("EligibilityStream", p["siddhiQuery"])
        url = "%s/custom/%s" % (P, p["policyId"])
        body = dict(p, keyTemplate="$apiName:$clientIp")
        r = self.c.put(url, json=body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.c.get(url).json["keyTemplate"], "$apiName:$clientIp")
        # custom properties are not known to the gateway
        r = self.c.put(url, json=dict(p, keyTemplate="$customProperty.region:$clientIp"))
        self.assertError(r, 400, "keyTemplate", "not supported in custom policies")
        self.assertIsNotNone(by_name(self.list_all(P + "/custom"), name))
        self.assertEqual(self.c.delete(url).status, 200)
        self.assertError(self.c.get(url), 404)

    def test_bad_rules(self):
        r = self.c.post(P + "/custom", json=custom_body(uniq("r"), "$user:$apiContext"))
        self.assertError(r, 400, "keyTemplate", "$user", "$userId", "$clientIp")
        r = self.c.post(P + "/custom", json=custom_body(uniq("r"), "$userId::$apiContext"))
        self.assertError(r, 400, "keyTemplate", "empty segment")
        b = custom_body(uniq("r"))
        del b["siddhiQuery"]
        self.assertError(self.c.post(P + "/custom", json=b), 400, "'siddhiQuery' is required")
        b = custom_body(uniq("r"), defaultLimit=rc_limit(1))
        self.assertError(self.c.post(P + "/custom", json=b), 400, "Unknown field 'defaultLimit'")


# -------------------------------------------------------------- validation

class ValidationTest(AdminCase):
    """Each bad body is refused with 400 and a description naming the field
    and what is allowed; nothing is created."""

    def cases(self):
        lim = rc_limit(10)
        return [
            ({"bogus": 1}, ["Unknown field 'bogus'", "policyName", "defaultLimit"]),
            ({"defaultLimit": dict(lim, requestCount={"timeUnit": "fortnight", "unitTime": 1,
                                                      "requestCount": 5})},
             ["defaultLimit.requestCount.timeUnit",
              "sec, min, hour, day, week, month, year", "fortnight"]),
            ({"defaultLimit": dict(lim, requestCount={"timeUnit": "s", "unitTime": 1,
                                                      "requestCount": 5})},
             ["defaultLimit.requestCount.timeUnit", "(got 's')"]),
            ({"defaultLimit": {"type": "REQUESTLIMIT", "requestCount": lim["requestCount"]}},
             ["defaultLimit.type", "REQUESTCOUNTLIMIT, BANDWIDTHLIMIT, EVENTCOUNTLIMIT"]),
            ({"defaultLimit": {"type": "BANDWIDTHLIMIT", "requestCount": lim["requestCount"]}},
             ["defaultLimit.bandwidth", "required", "BANDWIDTHLIMIT"]),
            ({"defaultLimit": rc_limit(0)}, ["defaultLimit.requestCount.requestCount",
                                             "between 1"]),
            ({"defaultLimit": rc_limit(-5)}, ["defaultLimit.requestCount.requestCount"]),
            ({"defaultLimit": rc_limit(5, unit_time=0)},
             ["defaultLimit.requestCount.unitTime", "between 1"]),
            ({"defaultLimit": rc_limit("many")},
             ["defaultLimit.requestCount.requestCount", "must be an integer"]),
            ({"defaultLimit": bw_limit(5, "TB")},
             ["defaultLimit.bandwidth.dataUnit", "KB, MB, GB", "TB"]),
            ({"defaultLimit": bw_limit(0)}, ["defaultLimit.bandwidth.dataAmount"]),
            ({"defaultLimit": None}, ["'defaultLimit' is required"]),
            ({"policyName": "has space"}, ["policyName", "letters, digits"]),
            ({"policyName": "x" * 61}, ["policyName", "1 to 60"]),
            ({"policyName": ""}, ["policyName"]),
            ({"policyName": 12}, ["policyName", "string"]),
            ({"policyName": None}, ["'policyName' is required"]),
            ({"description": 5}, ["'description' must be a string"]),
            ({"type": "SubscriptionThrottlePolicy"},
             ["'type' must be one of: ApplicationThrottlePolicy"]),
            ({"burstLimit": {"rateLimitCount": 1, "rateLimitTimeUnit": "sec", "x": 1}},
             ["Unknown field 'burstLimit.x'", "rateLimitCount, rateLimitTimeUnit"]),
        ]

    def test_bad_application_bodies(self):
        before = len(self.list_all(P + "/application"))
        for change, needles in self.cases():
            body = app_body(uniq("val"))
            body.update(change)
            r = self.c.post(P + "/application", json=body)
            self.assertError(r, 400, *needles)
        self.assertEqual(len(self.list_all(P + "/application")), before)

    def test_bad_bodies_on_put(self):
        p = self.create("application", app_body(uniq("valput"), rc_limit(7)))
        url = "%s/application/%s" % (P, p["policyId"])
        r = self.c.put(url, json=dict(p, defaultLimit=rc_limit(7, "fortnight")))
        self.assertError(r, 400, "fortnight")
        self.assertEqual(self.c.get(url).json, p)

    def test_not_json(self):
        r = self.c.post(P + "/application", data="policyName=x", content_type="text/plain")
        self.assertIn(r.status, (400, 415), r)
        r = self.c.post(P + "/application", data="{not json", content_type="application/json")
        self.assertError(r, 400)
        r = self.c.post(P + "/application", json=[app_body(uniq("arr"))])
        self.assertError(r, 400)

    def test_enum_case_is_normalised(self):
        p = self.create("application", app_body(uniq("case"), {
            "type": "requestCountLimit",
            "requestCount": {"timeUnit": "MIN", "unitTime": 1, "requestCount": 3}}))
        self.assertEqual(p["defaultLimit"]["type"], "REQUESTCOUNTLIMIT")
        self.assertEqual(p["defaultLimit"]["requestCount"]["timeUnit"], "min")


# ------------------------------------------------------------ deny policies

class DenyPolicyTest(AdminCase):

    def deny(self, ctype, value, status=201, **kw):
        body = {"conditionType": ctype, "conditionValue": value}
        body.update(kw)
        r = self.c.post(DENY, json=body)
        self.assertEqual(r.status, status, r)
        return r

    def test_api_condition_lifecycle(self):
        ctx = "/%s/1.0.0" % uniq("pizza")
        d = self.deny("API", ctx).json
        self.assertEqual(d["conditionType"], "API")
        self.assertEqual(d["conditionValue"], ctx)
        self.assertIs(d["conditionStatus"], True)
        url = DENY1 + d["conditionId"]
        r = self.c.get(url)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, d)
        self.assertError(self.deny("API", ctx, 409), 409, "already exists")

        r = self.c.patch(url, json={"conditionStatus": False})
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.json["conditionStatus"], False)
        self.assertIs(self.c.get(url).json["conditionStatus"], False)
        r = self.c.patch(url, json={"conditionStatus": True})
        self.assertIs(r.json["conditionStatus"], True)

        self.assertEqual(self.c.delete(url).status, 200)
        self.assertError(self.c.get(url), 404)
        self.assertError(self.c.delete(url), 404)
        self.assertError(self.c.patch(url, json={"conditionStatus": True}), 404)

    def test_application_user_and_ip_conditions(self):
        app = "admin:%s" % uniq("App")
        d = self.deny("APPLICATION", app).json
        self.assertEqual(d["conditionValue"], app)
        user = uniq("mallory")
        d = self.deny("USER", user, conditionStatus=False).json
        self.assertEqual(d["conditionValue"], user)
        self.assertIs(d["conditionStatus"], False)
        d = self.deny("IP", {"fixedIp": "192.0.2.10", "invert": False}).json
        self.assertEqual(d["conditionValue"], {"fixedIp": "192.0.2.10", "invert": False})
        d = self.deny("IP", {"fixedIp": "2001:db8::10"}).json
        self.assertEqual(d["conditionValue"], {"fixedIp": "2001:db8::10", "invert": False})
        # older clients send a bare address
        d = self.deny("IP", "192.0.2.77").json
        self.assertEqual(d["conditionValue"], {"fixedIp": "192.0.2.77", "invert": False})
        self.assertError(self.deny("IP", "192.0.2.77", 409), 409, "already exists")

    def test_ip_ranges(self):
        d = self.deny("IPRANGE", {"startingIp": "198.51.100.1", "endingIp": "198.51.100.200",
                                  "invert": True}).json
        self.assertEqual(d["conditionValue"], {"startingIp": "198.51.100.1",
                                               "endingIp": "198.51.100.200", "invert": True})
        d6 = self.deny("IPRANGE", {"startingIp": "2001:db8:1::1",
                                   "endingIp": "2001:db8:1::ffff"}).json
        self.assertEqual(d6["conditionValue"]["endingIp"], "2001:db8:1::ffff")
        # the same range written differently is a duplicate
        r = self.deny("IPRANGE", {"startingIp": "2001:0db8:0001::0001",
                                  "endingIp": "2001:db8:1:0::ffff"}, 409)
        self.assertError(r, 409, "already exists")
        # ... but the inverted one is another condition
        self.deny("IPRANGE", {"startingIp": "2001:db8:1::1", "endingIp": "2001:db8:1::ffff",
                              "invert": True})
        self.assertError(self.deny("IPRANGE", {"startingIp": "198.51.100.9",
                                               "endingIp": "198.51.100.1"}, 400),
                         400, "conditionValue.startingIp", "must not be greater")
        self.assertError(self.deny("IPRANGE", {"startingIp": "198.51.100.1",
                                               "endingIp": "2001:db8::1"}, 400),
                         400, "both be IPv4 or both be IPv6")
        self.assertError(self.deny("IPRANGE", {"startingIp": "198.51.100.1"}, 400),
                         400, "conditionValue.endingIp", "required")

    def test_bad_conditions(self):
        self.assertError(self.deny("HOST", "x", 400), 400, "conditionType",
                         "API, APPLICATION, IP, IPRANGE, USER")
        self.assertError(self.c.post(DENY, json={"conditionType": "API"}), 400,
                         "'conditionValue' is required")
        self.assertError(self.deny("API", "pizza", 400), 400, "context", "/pizza/1.0.0")
        self.assertError(self.deny("APPLICATION", "noowner", 400), 400, "owner:applicationName")
        self.assertError(self.deny("USER", "two words", 400), 400, "user name")
        self.assertError(self.deny("IP", {"fixedIp": "300.1.1.1"}, 400), 400,
                         "conditionValue.fixedIp", "300.1.1.1")
        self.assertError(self.deny("IP", {"fixedIp": "10.0.0.1", "mask": 8}, 400), 400,
                         "Unknown field 'conditionValue.mask'")
        self.assertError(self.deny("IP", ["10.0.0.1"], 400), 400, "fixedIp")
        self.assertError(self.deny("API", "/a/1", 400, conditionStatus="on"), 400,
                         "conditionStatus", "boolean")
        d = self.deny("USER", uniq("u")).json
        r = self.c.patch(DENY1 + d["conditionId"], json={})
        self.assertError(r, 400, "'conditionStatus' is required")
        r = self.c.patch(DENY1 + d["conditionId"], json={"conditionStatus": "no"})
        self.assertError(r, 400, "conditionStatus")

    def test_list_and_filter(self):
        ip = self.deny("IP", {"fixedIp": "203.0.113.%d" % secrets.randbelow(250)}).json
        user = self.deny("USER", uniq("eve")).json
        every = self.list_all(DENY)
        ids = {d["conditionId"] for d in every}
        self.assertTrue({ip["conditionId"], user["conditionId"]} <= ids)
        only_ip = self.list_all(DENY, query="conditionType:IP")
        self.assertTrue(only_ip)
        self.assertTrue(all(d["conditionType"] == "IP" for d in only_ip), only_ip)
        self.assertIn(ip["conditionId"], {d["conditionId"] for d in only_ip})
        by_value = self.list_all(DENY, query="conditionType:USER&conditionValue:"
                                 + user["conditionValue"])
        self.assertEqual([d["conditionId"] for d in by_value], [user["conditionId"]])
        self.assertError(self.c.get(DENY, query={"query": "conditionType:HOST"}), 400,
                         "conditionType")
        self.assertError(self.c.get(DENY, query={"query": "name:x"}), 400, "conditionType:")
        r = self.c.get(DENY, query={"limit": 1})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.json["list"]), 1)
        self.assertEqual(r.json["pagination"]["total"], len(every))

    def test_unknown_condition_is_404(self):
        for cid in (UNKNOWN_ID, "nope"):
            self.assertError(self.c.get(DENY1 + cid), 404)
            self.assertError(self.c.delete(DENY1 + cid), 404)


# ------------------------------------------------------------- environments

class EnvironmentTest(AdminCase):

    def env_body(self, name, **kw):
        b = {"name": name, "displayName": "Env " + name, "description": "test gateways",
             "type": "production",
             "vhosts": [{"host": "%s.gw.example.com" % name.lower(), "httpContext": "",
                         "httpPort": 80, "httpsPort": 443}]}
        b.update(kw)
        return b

    def test_crud(self):
        name = uniq("Edge-")
        r = self.c.post(ENV, json=self.env_body(name))
        self.assertEqual(r.status, 201, r)
        e = r.json
        self.assertEqual(e["name"], name)
        self.assertEqual(e["provider"], "wso2")
        self.assertEqual(e["type"], "production")
        self.assertIs(e["isReadOnly"], False)
        vh = e["vhosts"][0]
        self.assertEqual((vh["httpPort"], vh["httpsPort"]), (80, 443))
        off = int(srv().effective_conf["server"]["port_offset"])
        self.assertEqual((vh["wsPort"], vh["wssPort"]), (9099 + off, 8099 + off))
        url = ENV + "/" + e["id"]
        self.assertEqual(self.c.get(url).json, e)
        self.assertIsNotNone(by_name(self.list_all(ENV), name))

        body = dict(e, displayName="Renamed display", type="sandbox",
                    vhosts=[{"host": "a.example.com"}, {"host": "b.example.com",
                                                        "httpContext": "/gw"}],
                    additionalProperties=[{"key": "region", "value": "eu"}])
        r = self.c.put(url, json=body)
        self.assertEqual(r.status, 200, r)
        got = self.c.get(url).json
        self.assertEqual(got["displayName"], "Renamed display")
        self.assertEqual(got["type"], "sandbox")
        self.assertEqual([v["host"] for v in got["vhosts"]], ["a.example.com", "b.example.com"])
        self.assertEqual(got["vhosts"][0]["httpPort"], 8280 + off)
        self.assertEqual(got["vhosts"][1]["httpContext"], "/gw")
        self.assertEqual(got["additionalProperties"], [{"key": "region", "value": "eu"}])

        self.assertError(self.c.put(url, json=dict(body, name=uniq("x"))), 400,
                         "'name' cannot be changed")
        self.assertEqual(self.c.delete(url).status, 200)
        self.assertError(self.c.get(url), 404)
        self.assertIsNone(by_name(self.list_all(ENV), name))

    def test_duplicate_and_bad_bodies(self):
        name = uniq("dup")
        self.assertEqual(self.c.post(ENV, json=self.env_body(name)).status, 201)
        self.assertError(self.c.post(ENV, json=self.env_body(name)), 409, name)
        self.assertError(self.c.post(ENV, json=self.env_body("Default")), 409, "Default")
        cases = [
            (self.env_body("bad name"), ["'name'", "letters, digits"]),
            (self.env_body(uniq("e"), vhosts=[]), ["'vhosts' must have at least one item"]),
            (dict((k, v) for k, v in self.env_body(uniq("e")).items() if k != "vhosts"),
             ["'vhosts' is required"]),
            (self.env_body(uniq("e"), vhosts=[{"host": "http://x"}]),
             ["vhosts[0].host", "host name"]),
            (self.env_body(uniq("e"), vhosts=[{"host": "a.b", "httpPort": 70000}]),
             ["vhosts[0].httpPort", "between 1 and 65535"]),
            (self.env_body(uniq("e"), vhosts=[{"host": "a.b"}, {"host": "A.B"}]),
             ["vhosts[1].host", "twice"]),
            (self.env_body(uniq("e"), type="staging"),
             ["'type' must be one of: hybrid, production, sandbox"]),
            (self.env_body(uniq("e"), provider="AWS"), ["'provider'", "wso2"]),
            (self.env_body(uniq("e"), colour="blue"), ["Unknown field 'colour'"]),
        ]
        for body, needles in cases:
            self.assertError(self.c.post(ENV, json=body), 400, *needles)

    def test_default_is_read_only(self):
        d = by_name(self.list_all(ENV), "Default")
        url = ENV + "/" + d["id"]
        self.assertError(self.c.put(url, json=dict(d, displayName="Mine")), 403, "read-only")
        self.assertError(self.c.delete(url), 403, "read-only")
        self.assertEqual(self.c.get(url).json, d)

    def test_unknown_environment_is_404(self):
        for eid in (UNKNOWN_ID, "Default"):
            self.assertError(self.c.get(ENV + "/" + eid), 404)
            self.assertError(self.c.put(ENV + "/" + eid, json=self.env_body("x")), 404)
            self.assertError(self.c.delete(ENV + "/" + eid), 404)


# -------------------------------------------------------------------- roles

class RoleMatrixTest(AdminCase):
    """Only admins write; creators and publishers may read policies
    (apim:tier_view); subscribers and anonymous callers may not."""

    @classmethod
    def setUpClass(cls):
        s = srv()
        cls.pw = "Passw0rd!x"
        cls.users = {}
        for role in ("Internal/creator", "Internal/publisher", "Internal/subscriber"):
            name = uniq(role.split("/")[1])
            s.create_user(name, cls.pw, [role])
            cls.users[role] = name

    def as_role(self, role):
        if role == "anonymous":
            return srv().client(None)
        if role == "admin":
            return srv().client()
        return srv().client(self.users[role], self.pw)

    def writes(self, c):
        """One write of each kind; returns their statuses."""
        return [
            c.post(P + "/application", json=app_body(uniq("rm"))).status,
            c.post(P + "/subscription", json=sub_body(uniq("rm"))).status,
            c.post(DENY, json={"conditionType": "USER", "conditionValue": uniq("rm")}).status,
            c.post(ENV, json={"name": uniq("rm"), "vhosts": [{"host": "rm.example.com"}]}).status,
        ]

    def test_admin_writes(self):
        self.assertEqual(self.writes(self.as_role("admin")), [201, 201, 201, 201])

    def test_others_cannot_write(self):
        for role, status in (("Internal/creator", 403), ("Internal/publisher", 403),
                             ("Internal/subscriber", 403), ("anonymous", 401)):
            self.assertEqual(self.writes(self.as_role(role)), [status] * 4, role)

    def test_others_cannot_change_or_delete(self):
        admin = self.as_role("admin")
        p = self.create("application", app_body(uniq("rmx")))
        url = "%s/application/%s" % (P, p["policyId"])
        d = admin.post(DENY, json={"conditionType": "USER", "conditionValue": uniq("rm")}).json
        for role, status in (("Internal/creator", 403), ("Internal/publisher", 403),
                             ("anonymous", 401)):
            c = self.as_role(role)
            self.assertEqual(c.put(url, json=p).status, status, role)
            self.assertEqual(c.delete(url).status, status, role)
            self.assertEqual(c.patch(DENY1 + d["conditionId"],
                                     json={"conditionStatus": False}).status, status, role)
            self.assertEqual(c.delete(DENY1 + d["conditionId"]).status, status, role)
        self.assertEqual(admin.get(url).json, p)
        self.assertIs(admin.get(DENY1 + d["conditionId"]).json["conditionStatus"], True)

    def test_reads(self):
        expect = {
            "admin": (200, 200, 200),
            "Internal/creator": (200, 403, 403),
            "Internal/publisher": (200, 403, 403),
            "Internal/subscriber": (403, 403, 403),
            "anonymous": (401, 401, 401),
        }
        for role, (pol, deny, env) in expect.items():
            c = self.as_role(role)
            got = (c.get(P + "/subscription").status, c.get(DENY).status, c.get(ENV).status)
            self.assertEqual(got, (pol, deny, env), role)
        r = self.as_role("Internal/creator").get(P + "/subscription")
        self.assertIsNotNone(by_name(r.json["list"], "Gold"))
        r = self.as_role("Internal/subscriber").get(P + "/subscription")
        self.assertError(r, 403)


# --------------------------------------------------------- change sequence

class ChangeSequenceTest(AdminCase):
    """Every gateway-relevant change bumps the change sequence in the same
    transaction; refused requests do not."""

    def sql(self, query):
        s = srv()
        if apimtest.is_postgresql():
            out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-d", s.apimgtdb_url, "-c",
                                  query], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, timeout=60)
        else:
            out = subprocess.run(["sqlite3", os.path.join(s.home, "apimgt.db"), query],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout.strip()

    def seq(self):
        return int(self.sql("SELECT seq FROM am_change_seq WHERE id = 1"))

    def last_change(self):
        line = self.sql("SELECT entity_type, entity_id, action, payload FROM am_change_log "
                        "ORDER BY seq DESC LIMIT 1")
        etype, eid, action, payload = line.split("|", 3)
        return etype, eid, action, json.loads(payload)

    def step(self, fn, entity, action):
        """Runs fn, checks the sequence went up by one and what was recorded."""
        before = self.seq()
        out = fn()
        self.assertEqual(self.seq(), before + 1, "%s %s" % (entity, action))
        etype, _eid, act, payload = self.last_change()
        self.assertEqual((etype, act), (entity, action))
        return out, payload

    def test_policy_changes(self):
        name = uniq("seq")
        p, payload = self.step(lambda: self.create("advanced", adv_body(name)), "policy", "create")
        self.assertEqual(payload, {"level": "advanced", "name": name})
        url = "%s/advanced/%s" % (P, p["policyId"])
        self.step(lambda: self.assertEqual(self.c.put(url, json=p).status, 200),
                  "policy", "update")
        before = self.seq()
        self.assertEqual(self.c.post(P + "/advanced", json=adv_body(name)).status, 409)
        self.assertEqual(self.c.put(url, json=dict(p, defaultLimit=None)).status, 400)
        self.assertEqual(self.seq(), before)
        _, payload = self.step(lambda: self.assertEqual(self.c.delete(url).status, 200),
                               "policy", "delete")
        self.assertEqual(payload, {"level": "advanced", "name": name})

    def test_deny_changes(self):
        user = uniq("seq")
        r, payload = self.step(lambda: self.c.post(DENY, json={"conditionType": "USER",
                                                              "conditionValue": user}),
                               "block", "create")
        self.assertEqual(r.status, 201, r)
        self.assertEqual(payload["conditionValue"], user)
        url = DENY1 + r.json["conditionId"]
        _, payload = self.step(lambda: self.c.patch(url, json={"conditionStatus": False}),
                               "block", "update")
        self.assertIs(payload["conditionStatus"], False)
        # the same status again changes nothing
        before = self.seq()
        self.assertEqual(self.c.patch(url, json={"conditionStatus": False}).status, 200)
        self.assertEqual(self.seq(), before)
        self.step(lambda: self.c.delete(url), "block", "delete")

    def test_environment_changes(self):
        name = uniq("seqenv")
        r, payload = self.step(lambda: self.c.post(ENV, json={
            "name": name, "vhosts": [{"host": "seq.example.com"}]}), "environment", "create")
        self.assertEqual(payload, {"name": name})
        self.step(lambda: self.c.delete(ENV + "/" + r.json["id"]), "environment", "delete")


# ---------------------------------------------------------------- in use

class InUseTest(AdminCase):
    """A policy or an environment that something uses cannot be deleted."""

    PUB = "/api/am/publisher/v4"

    def make_api(self, **fields):
        name = uniq("InUse")
        body = {"name": name, "context": "/" + name.lower(), "version": "1.0.0",
                "policies": ["Unlimited"],
                "endpointConfig": {"endpoint_type": "http",
                                   "production_endpoints": {"url": "http://127.0.0.1:9/"}},
                "operations": [{"target": "/*", "verb": "GET"}]}
        body.update(fields)
        r = self.c.post(self.PUB + "/apis", json=body)
        self.assertEqual(r.status, 201, r)
        self.addCleanup(lambda: self.c.delete(self.PUB + "/apis/" + r.json["id"]))
        return r.json

    def test_subscription_policy_in_use(self):
        name = uniq("InUseTier")
        p = self.create("subscription", sub_body(name))
        api = self.make_api(policies=[name])
        url = "%s/subscription/%s" % (P, p["policyId"])
        self.assertError(self.c.delete(url), 409, name, "in use")
        self.assertEqual(self.c.get(url).status, 200)
        self.assertEqual(self.c.delete(self.PUB + "/apis/" + api["id"]).status, 200)
        self.assertEqual(self.c.delete(url).status, 200)

    def test_advanced_policy_in_use(self):
        name = uniq("InUseAdv")
        p = self.create("advanced", adv_body(name))
        api = self.make_api(apiThrottlingPolicy=name)
        url = "%s/advanced/%s" % (P, p["policyId"])
        self.assertError(self.c.delete(url), 409, name, "in use")
        self.assertEqual(self.c.delete(self.PUB + "/apis/" + api["id"]).status, 200)
        self.assertEqual(self.c.delete(url).status, 200)

    def test_environment_with_deployments(self):
        name = uniq("InUseEnv")
        r = self.c.post(ENV, json={"name": name, "vhosts": [{"host": "inuse.example.com"}]})
        self.assertEqual(r.status, 201, r)
        env_url = ENV + "/" + r.json["id"]
        api = self.make_api()
        r = self.c.post(self.PUB + "/apis/%s/revisions" % api["id"], json={"description": "r1"})
        self.assertEqual(r.status, 201, r)
        rev = r.json["id"]
        r = self.c.post(self.PUB + "/apis/%s/deploy-revision" % api["id"],
                        query={"revisionId": rev},
                        json=[{"name": name, "vhost": "inuse.example.com",
                               "displayOnDevportal": True}])
        self.assertIn(r.status, (200, 201), r)
        self.assertError(self.c.delete(env_url), 409, name, "undeploy")
        r = self.c.post(self.PUB + "/apis/%s/undeploy-revision" % api["id"],
                        query={"revisionId": rev},
                        json=[{"name": name, "vhost": "inuse.example.com",
                               "displayOnDevportal": True}])
        self.assertIn(r.status, (200, 201), r)
        self.assertEqual(self.c.delete(env_url).status, 200)


if __name__ == "__main__":
    unittest.main()
