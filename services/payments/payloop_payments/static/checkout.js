// The hosted checkout page: choose invoices and amounts (or one invoice in installments, with the
// schedule shown before confirming), then a saved bank account or a new card (saved with Stripe.js).
// Amounts are handled as integer minor units (cents) parsed from text, never as floats.
(() => {
  'use strict';
  const form = document.getElementById('checkout');
  if (!form) return;

  const currency = form.dataset.currency;
  const button = document.getElementById('pay-button');
  const errorBox = document.getElementById('error');
  const progress = document.getElementById('progress');
  const stripe = Stripe(form.dataset.publishableKey);
  const card = stripe.elements().create('card');
  card.mount('#card-element');

  // One key per payment attempt: a double click or a resent request finds the same payment.
  const newKey = () => Array.from(crypto.getRandomValues(new Uint8Array(16)),
                                  b => b.toString(16).padStart(2, '0')).join('');
  let idempotencyKey = newKey();
  let busy = false;

  function toMinor(text) {
    const match = /^\s*(\d{1,9})(?:\.(\d{1,2}))?\s*$/.exec(text);
    if (!match) return null;
    return parseInt(match[1], 10) * 100 + parseInt((match[2] || '0').padEnd(2, '0'), 10);
  }

  function format(minor) {
    const whole = Math.floor(minor / 100).toLocaleString('en-US');
    return `${currency} ${whole}.${String(minor % 100).padStart(2, '0')}`;
  }

  function chosen() {
    const allocations = [];
    const problems = [];
    form.querySelectorAll('li.invoice').forEach(item => {
      const box = item.querySelector('.pay-invoice');
      const field = item.querySelector('.pay-amount');
      field.disabled = !box.checked;
      field.removeAttribute('aria-invalid');
      if (!box.checked) return;
      const minor = toMinor(field.value);
      const open = parseInt(item.dataset.open, 10);
      if (minor === null || minor <= 0 || minor > open) {
        field.setAttribute('aria-invalid', 'true');
        problems.push(`${field.labels[0].textContent}: enter an amount between ${format(1)} and ${format(open)}.`);
        return;
      }
      allocations.push({invoice_id: item.dataset.invoice, amount_minor: minor});
    });
    if (!allocations.length && !problems.length) problems.push('Choose at least one invoice to pay.');
    return {allocations, problems};
  }

  // The saved bank account chosen on the page, or null for a new card.
  function bankAccount() {
    const picked = form.querySelector('input[name="method"]:checked');
    return picked && picked.value !== 'card' ? picked.value : null;
  }

  function showCardFields() {
    const cardFields = document.getElementById('card-fields');
    cardFields.hidden = bankAccount() !== null;
  }

  const planParts = document.getElementById('plan-parts');
  const schedule = document.getElementById('plan-schedule');
  let quoted = null;   // the schedule on screen: {invoice_id, parts, first_minor}
  let quoteSeq = 0;    // answers to older quote requests are ignored

  // The one invoice a plan would cover, or a sentence saying why there is none.
  function planInvoice() {
    const picked = Array.from(form.querySelectorAll('li.invoice'))
      .filter(item => item.querySelector('.pay-invoice').checked);
    return picked.length === 1 ? picked[0].dataset.invoice : null;
  }

  async function showSchedule() {
    const seq = ++quoteSeq;
    quoted = null;
    schedule.hidden = true;
    const parts = planParts.value;
    const invoiceId = planInvoice();
    if (!parts || !invoiceId) return;
    const url = `${form.dataset.quoteUrl}?invoice_id=${encodeURIComponent(invoiceId)}&parts=${parts}`;
    const response = await fetch(url, {credentials: 'same-origin'});
    const answer = await response.json().catch(() => ({}));
    if (seq !== quoteSeq) return;
    if (!response.ok) return fail(answer.detail || 'This invoice cannot be split.');
    const body = schedule.querySelector('tbody');
    body.replaceChildren(...answer.parts.map(part => {
      const row = document.createElement('tr');
      for (const text of [`${part.seq} of ${answer.parts.length}`, part.due_on, format(part.amount_minor)]) {
        const cell = document.createElement('td');
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }));
    schedule.hidden = false;
    quoted = {invoice_id: invoiceId, parts: parseInt(parts, 10), first_minor: answer.parts[0].amount_minor};
    refresh();
  }

  // The tenant's card convenience fee on a card payment, rounded half up to the cent like the server
  // does (integers only); a bank account and an installment plan pay none.
  const feeBps = parseInt(form.dataset.cardFeeBps, 10);
  const cardFee = total => (bankAccount() === null && !quoted ? Math.floor((total * feeBps + 5000) / 10000) : 0);

  function refresh() {
    const {allocations} = chosen();
    const total = allocations.reduce((sum, a) => sum + a.amount_minor, 0);
    const fee = cardFee(total);
    document.getElementById('total').textContent = format(total);
    const feeLine = document.getElementById('card-fee');
    if (feeLine) {
      feeLine.hidden = fee === 0;
      document.getElementById('card-fee-amount').textContent = format(fee);
    }
    document.getElementById('pay-total').textContent = quoted ? `${format(quoted.first_minor)} now` : format(total + fee);
  }

  async function post(url, body, headers = {}) {
    const response = await fetch(url, {
      method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', ...headers}, body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.detail || answer.title || `The request failed (${response.status}).`);
    return answer;
  }

  function fail(message) {
    errorBox.textContent = message;
    progress.textContent = '';
    busy = false;
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }

  form.addEventListener('input', refresh);
  form.addEventListener('change', event => {
    showCardFields();
    refresh();
    // Only the plan or the choice of invoices changes the schedule (not typing in the card fields).
    if (event.target === planParts || event.target.classList.contains('pay-invoice')) showSchedule();
  });
  form.addEventListener('submit', async event => {
    event.preventDefault();
    if (busy) return;
    const {allocations, problems} = chosen();
    const total = allocations.reduce((sum, a) => sum + a.amount_minor, 0);
    if (planParts.value && !quoted) return fail('Choose exactly one invoice to pay in installments.');
    if (problems.length && !quoted) return fail(problems.join(' '));
    busy = true;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    errorBox.textContent = '';
    const account = bankAccount();
    const options = {save_method: !account && document.getElementById('save-card').checked,
                     autopay: document.getElementById('autopay').checked};
    try {
      let method = {payment_method_id: account};
      if (!account) {
        progress.textContent = 'Checking your card…';
        const setup = await post(form.dataset.setupUrl, options);
        const confirmed = await stripe.confirmCardSetup(setup.client_secret, {payment_method: {card}});
        if (confirmed.error) {
          return fail(confirmed.error.message || 'Check your card details and try again.');
        }
        method = {setup_intent_id: confirmed.setupIntent.id};
      }
      progress.textContent = 'Paying…';
      const paid = quoted
        ? (await post(form.dataset.planUrl, {...method, invoice_id: quoted.invoice_id, parts: quoted.parts},
                      {'Idempotency-Key': idempotencyKey})).first_payment
        : await post(form.dataset.payUrl, {...options, ...method, allocations, card_fee_minor: cardFee(total)},
                     {'Idempotency-Key': idempotencyKey});
      if (paid.status === 'failed') {
        idempotencyKey = newKey();  // a declined card may be replaced: that is a new payment
        return fail(paid.message || 'The payment was declined.');
      }
      progress.textContent = 'Paid. Opening your receipt…';
      window.location.assign(paid.receipt_url);
    } catch (error) {
      fail(error.message || 'Something went wrong. Nothing was charged twice; please try again.');
    }
  });
  refresh();
})();
