"""The in-memory localstripe the tests and the benchmark run (`payloop.simulators.localstripe_process`)
finds a charge's refunds by index instead of scanning its store: the answers must stay localstripe's."""
import httpx

KEY = {"Authorization": "Bearer sk_test_refunds"}


async def _charge(stripe: httpx.AsyncClient, amount: int) -> tuple[str, str]:
    method = (await stripe.post("/v1/payment_methods", data={
        "type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12",
        "card[exp_year]": "2030", "card[cvc]": "123"})).json()["id"]
    intent = (await stripe.post("/v1/payment_intents", data={
        "amount": str(amount), "currency": "usd", "payment_method": method, "confirm": "true"})).json()
    assert intent["status"] == "succeeded", intent
    charge = intent["latest_charge"]  # localstripe answers it expanded
    return intent["id"], charge if isinstance(charge, str) else charge["id"]


async def test_a_charges_refunds_are_its_own_newest_first_whichever_way_they_are_asked_for(localstripe):
    async with httpx.AsyncClient(base_url=localstripe, headers=KEY) as stripe:
        intent, charge = await _charge(stripe, 5_000)
        _, other = await _charge(stripe, 7_000)
        first = (await stripe.post("/v1/refunds", data={"charge": charge, "amount": "1000"})).json()["id"]
        second = (await stripe.post("/v1/refunds", data={"payment_intent": intent, "amount": "1500"})).json()["id"]
        (await stripe.post("/v1/refunds", data={"charge": other})).raise_for_status()

        by_charge = (await stripe.get("/v1/refunds", params={"charge": charge})).json()["data"]
        by_intent = (await stripe.get("/v1/refunds", params={"payment_intent": intent})).json()["data"]
        assert [r["id"] for r in by_charge] == [r["id"] for r in by_intent]
        assert sorted(r["id"] for r in by_charge) == sorted([first, second])
        assert [r["created"] for r in by_charge] == sorted((r["created"] for r in by_charge), reverse=True)
        answered = (await stripe.get(f"/v1/charges/{charge}")).json()
        assert (answered["amount_refunded"], answered["refunded"]) == (2_500, False)
        assert (await stripe.get(f"/v1/charges/{other}")).json()["refunded"] is True
        assert len((await stripe.get("/v1/refunds", params={"limit": 100})).json()["data"]) >= 3

        assert (await stripe.get("/v1/refunds", params={"charge": "ch_unknown"})).status_code == 404
        assert (await stripe.get("/v1/refunds", params={"charge": "nope"})).status_code == 400
        refused = await stripe.post("/v1/refunds", data={"charge": charge, "amount": "-5"})
        assert refused.status_code == 400
        assert len((await stripe.get("/v1/refunds", params={"charge": charge})).json()["data"]) == 2


async def test_a_kept_store_comes_back_after_a_restart_with_each_charges_refunds(tmp_path):
    """`payloop dev` runs localstripe on a store file of its own root; a restart reads it back."""
    from payloop.embedded import free_port
    from payloop.simulators.localstripe_process import start_localstripe

    store = tmp_path / "localstripe.pickle"

    def start():
        port = free_port()
        return start_localstripe(port, tmp_path, store=store), f"http://127.0.0.1:{port}"

    process, url = start()
    try:
        async with httpx.AsyncClient(base_url=url, headers=KEY) as stripe:
            _, charge = await _charge(stripe, 5_000)
            refund = (await stripe.post("/v1/refunds", data={"charge": charge, "amount": "1200"})).json()["id"]
    finally:
        process.terminate()
        process.wait(10)
    assert store.exists() and not (tmp_path / "localstripe.pickle.partial").exists()

    process, url = start()
    try:
        async with httpx.AsyncClient(base_url=url, headers=KEY) as stripe:
            assert [r["id"] for r in (await stripe.get("/v1/refunds", params={"charge": charge})).json()["data"]] \
                == [refund]
            assert (await stripe.get(f"/v1/charges/{charge}")).json()["amount_refunded"] == 1_200
    finally:
        process.terminate()
        process.wait(10)
