// The hosted checkout page: choose invoices and amounts, then a saved bank account or a new card
// (saved with Stripe.js), and pay once.
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

  function refresh() {
    const {allocations} = chosen();
    const total = allocations.reduce((sum, a) => sum + a.amount_minor, 0);
    document.getElementById('total').textContent = format(total);
    document.getElementById('pay-total').textContent = format(total);
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
  form.addEventListener('change', () => { showCardFields(); refresh(); });
  form.addEventListener('submit', async event => {
    event.preventDefault();
    if (busy) return;
    const {allocations, problems} = chosen();
    if (problems.length) return fail(problems.join(' '));
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
      const paid = await post(form.dataset.payUrl, {...options, ...method, allocations},
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
