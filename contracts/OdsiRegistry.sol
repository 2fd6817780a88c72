// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

interface IOdsiToken {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
    function mint(address to, uint256 value) external;
}

/// @title OdsiRegistry: odsi's control plane on an EVM chain (stake, slashing, payments, reputation).
/// @notice The same rules as src/ledger/rules.ts and the embedded SQLite ledger, in integers:
/// slash = floor(atRisk · ppm / 1e6) taken from bonded stake first, then from unbonding entries,
/// latest release first; reporter gets floor(slash · reporterSharePpm / 1e6), the rest is burned;
/// an epoch's fee is floor(charged · feePpm / 1e6), the rest split pro rata over credit units
/// (floor), rounding dust and forfeited shares to fees, so charged = rewards + fees exactly.
///
/// Evidence is verified here, by ecrecover over the exact EIP-712 records odsi nodes sign
/// (src/accountability/records/eip712.ts): domain {name "odsi", version "1", chainId} without
/// verifyingContract, so one signature is evidence in the SQLite ledger and on-chain alike.
/// Records are passed as their EIP-712 encodeData words (one 32-byte word per field, a `string`
/// as its keccak256): the contract hashes typeHash ‖ words itself, so no word can differ from
/// what the signer signed. An identity is the secp256k1 key = msg.sender (a transaction signed
/// by the key is its proof of possession).
contract OdsiRegistry {
    // ---------------------------------------------------------------- parameters

    /// @dev the on-chain subset of rules.ts LedgerParams (fractions in parts per million)
    struct Params {
        uint256 minStake;
        uint256 accuserBond;
        uint64 unbondingSec;
        uint64 disputeWindowSec;
        uint32 equivocationSlashPpm;
        uint32 custodySlashPpm;
        uint32 computationSlashPpm;
        uint32 reporterSharePpm;
        uint32 feePpm;
        uint32 verdictQuorum;
    }

    uint256 internal constant PPM = 1_000_000;
    /// secp256k1n / 2: signatures with a larger s are malleable copies and are refused
    uint256 internal constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    bytes32 public constant RECEIPT_TYPEHASH = keccak256(
        "ExecutionReceipt(bytes32 requestId,bytes32 sessionId,uint64 step,uint32 pos,uint32 nTokens,uint32 layerStart,uint32 layerEnd,bytes32 modelId,string profile,bytes32 inputHash,uint64 budgetUs,address signer,bytes32 outputHash,uint64 recvUs,uint64 computeUs,uint64 sendUs,bytes32 upstreamReceiptHash,bytes32 prevReceiptHash,bytes32 commitmentHash)"
    );
    bytes32 public constant REEXECUTION_TYPEHASH = keccak256(
        "ReexecutionReceipt(bytes32 requestId,bytes32 sessionId,uint64 step,uint32 pos,uint32 nTokens,uint32 layerStart,uint32 layerEnd,bytes32 modelId,string profile,bytes32 inputHash,uint64 budgetUs,address signer,bytes32 outputHash,uint64 recvUs,uint64 computeUs,uint64 sendUs,bytes32 upstreamReceiptHash,bytes32 prevReceiptHash,bytes32 commitmentHash)"
    );
    bytes32 public constant VERDICT_TYPEHASH = keccak256(
        "AuditVerdict(bytes32 receiptHash,bytes32 auditOutputHash,string profilePair,uint64 distancePpb,uint64 tolerancePpb,bool pass,address auditor)"
    );

    // receipt word indices (field order of ExecutionReceipt)
    uint256 internal constant R_REQUEST = 0;
    uint256 internal constant R_SESSION = 1;
    uint256 internal constant R_STEP = 2;
    uint256 internal constant R_POS = 3;
    uint256 internal constant R_NTOKENS = 4;
    uint256 internal constant R_LSTART = 5;
    uint256 internal constant R_LEND = 6;
    uint256 internal constant R_MODEL = 7;
    uint256 internal constant R_INPUT = 9;
    uint256 internal constant R_SIGNER = 11;
    uint256 internal constant R_OUTPUT = 12;
    uint256 internal constant R_UPSTREAM = 16;
    // verdict word indices (field order of AuditVerdict)
    uint256 internal constant V_RECEIPT = 0;
    uint256 internal constant V_PASS = 5;
    uint256 internal constant V_AUDITOR = 6;

    uint8 public constant KIND_EQUIVOCATION = 1;
    uint8 public constant KIND_CUSTODY = 2;
    uint8 public constant KIND_COMPUTATION = 3;

    // ---------------------------------------------------------------- state

    struct Unbonding {
        uint256 amount;
        uint64 releaseAt;
    }

    struct SlashRecord {
        uint8 kind;
        uint64 at;
        uint256 amount;
        bytes32 evidenceId;
    }

    struct Identity {
        bool registered;
        uint8 role; // 0 node, 1 gateway
        uint64 registeredAt;
        uint32 reputationPpm;
        uint64 reputationEpoch; // the reputation epoch reputationPpm is as of
        uint64 layerSteps;
        uint256 stake; // bonded
        uint256 slashed; // total taken by slashes
        uint256 earned; // total credited by settlements
        uint256 bonded; // locked in this identity's open accusations
        uint256 unbondingHead; // entries [head, length) are live, ordered by releaseAt
        Unbonding[] unbonding;
        SlashRecord[] slashes;
    }

    struct Account {
        uint256 balance;
        uint256 charged;
        uint256 deposited;
    }

    struct Dispute {
        address accuser;
        address accused;
        bytes32 receiptHash;
        uint256 bond;
        uint64 closesAt;
        uint32 guilty;
        uint32 innocent;
        bool open;
    }

    /// @dev everything that sums to the tokens this contract holds: minted (in) − out =
    /// wallets + stake + unbonding + accounts + bonds + fees + burned
    struct Totals {
        uint256 minted;
        uint256 withdrawnOut;
        uint256 wallets;
        uint256 stake;
        uint256 unbonding;
        uint256 accounts;
        uint256 bonds;
        uint256 fees;
        uint256 burned;
        uint256 slashed;
        uint256 charged;
        uint256 rewards;
    }

    IOdsiToken public immutable token;
    address public immutable operator;
    bytes32 public immutable DOMAIN_SEPARATOR;
    uint256 public immutable recordsChainId;
    Params internal params;
    /// @notice the complete rules.ts parameters as JSON (the off-chain ones too: price,
    /// probation, reputation), so every client of this deployment applies the same rules
    string public paramsJson;

    mapping(address => bool) public authorized;
    mapping(address => Identity) internal ids;
    address[] internal identityList;
    mapping(address => uint256) public walletOf;
    mapping(address => Account) internal accts;
    address[] internal accountList;
    mapping(address => bool) internal knownAccount;

    mapping(bytes32 => bool) public evidenceUsed;
    mapping(bytes32 => Dispute) public disputes;
    mapping(bytes32 => mapping(address => bool)) internal voted;
    bytes32[] internal openDisputes;

    mapping(address => uint64) public settledEpochOf; // per authorised gateway
    uint64 public epoch; // highest settled epoch (0 = none)
    uint64 public reputationEpoch; // last reputation epoch published
    uint64 public eventCount; // accepted writes
    Totals internal totals;

    // ---------------------------------------------------------------- events

    event Registered(address indexed identity, uint8 role);
    event Authorized(address indexed gateway);
    event Minted(address indexed to, uint256 amount, bool toAccount);
    event Staked(address indexed identity, uint256 amount);
    event UnstakeRequested(address indexed identity, uint256 amount, uint64 releaseAt);
    event Withdrawn(address indexed identity, uint256 amount);
    event Deposited(address indexed account, address indexed from, uint256 amount);
    event Slashed(address indexed identity, bytes32 indexed evidenceId, uint8 kind, uint256 amount, address reporter, uint256 reward);
    event DisputeOpened(bytes32 indexed id, address indexed accuser, address indexed accused, uint256 bond, uint64 closesAt);
    event DisputeClosed(bytes32 indexed id, uint8 outcome); // 1 guilty, 2 frivolous, 3 expired
    event Paid(address indexed identity, uint256 amount);
    event EpochSettled(uint64 indexed epoch, uint256 charged, uint256 rewards, uint256 fees);
    event ReputationPublished(uint64 indexed epoch, uint256 count, bytes32 reportsHash);

    // ---------------------------------------------------------------- errors (mapped to RejectCode by the client)

    error NotAuthorized();
    error AlreadyRegistered();
    error UnknownIdentity(address who);
    error Malformed(string why);
    error Overdrawn(address who, uint256 have, uint256 want);
    error BelowMinStake(uint256 stake, uint256 minimum);
    error IdentitySlashed(address who);
    error UnbondingNotOver(uint64 nextRelease);
    error NothingToWithdraw();
    error BadSignature(uint256 which, address recovered, address claimed);
    error EvidenceReplayed(bytes32 evidenceId);
    error Unprovable(string why);
    error UnknownDispute(bytes32 id);
    error DisputeIsClosed(bytes32 id);
    error EpochOrder(uint64 expected, uint64 given);
    error TransferFailed();

    constructor(address token_, uint256 recordsChainId_, Params memory p, string memory paramsJson_) {
        token = IOdsiToken(token_);
        operator = msg.sender;
        recordsChainId = recordsChainId_;
        if (p.verdictQuorum < 1 || p.equivocationSlashPpm > PPM || p.custodySlashPpm > PPM || p.computationSlashPpm > PPM || p.reporterSharePpm > PPM || p.feePpm > PPM)
            revert Malformed("params");
        params = p;
        paramsJson = paramsJson_;
        DOMAIN_SEPARATOR = keccak256(
            abi.encode(keccak256("EIP712Domain(string name,string version,uint256 chainId)"), keccak256("odsi"), keccak256("1"), recordsChainId_)
        );
    }

    modifier onlyOperator() {
        if (msg.sender != operator) revert NotAuthorized();
        _;
    }

    modifier counted() {
        _;
        eventCount += 1;
    }

    // ---------------------------------------------------------------- views

    function getParams() external view returns (Params memory) {
        return params;
    }

    function isEligible(address who) public view returns (bool) {
        Identity storage i = ids[who];
        return i.registered && i.slashes.length == 0 && i.stake >= params.minStake;
    }

    struct IdentityView {
        address addr;
        uint8 role;
        uint64 registeredAt;
        uint32 reputationPpm;
        uint64 reputationEpoch;
        uint64 layerSteps;
        uint256 wallet;
        uint256 stake;
        uint256 slashed;
        uint256 earned;
        uint256 bonded;
        bool eligible;
        Unbonding[] unbonding;
        SlashRecord[] slashes;
    }

    struct AccountView {
        address addr;
        uint256 balance;
        uint256 charged;
        uint256 deposited;
    }

    struct DisputeView {
        bytes32 id;
        address accuser;
        address accused;
        uint256 bond;
        uint64 closesAt;
        uint32 guilty;
        uint32 innocent;
    }

    function identityView(address who) public view returns (IdentityView memory v) {
        Identity storage i = ids[who];
        v.addr = who;
        v.role = i.role;
        v.registeredAt = i.registeredAt;
        v.reputationPpm = i.reputationPpm;
        v.reputationEpoch = i.reputationEpoch;
        v.layerSteps = i.layerSteps;
        v.wallet = walletOf[who];
        v.stake = i.stake;
        v.slashed = i.slashed;
        v.earned = i.earned;
        v.bonded = i.bonded;
        v.eligible = isEligible(who);
        uint256 n = i.unbonding.length - i.unbondingHead;
        v.unbonding = new Unbonding[](n);
        for (uint256 k = 0; k < n; k++) v.unbonding[k] = i.unbonding[i.unbondingHead + k];
        v.slashes = i.slashes;
    }

    function isRegistered(address who) external view returns (bool) {
        return ids[who].registered;
    }

    function accountView(address a) public view returns (AccountView memory) {
        Account storage x = accts[a];
        return AccountView(a, x.balance, x.charged, x.deposited);
    }

    function identities() external view returns (address[] memory) {
        return identityList;
    }

    /// @notice the whole state in one call (what `odsi ledger status` shows)
    function snapshot()
        external
        view
        returns (Totals memory t, IdentityView[] memory idv, AccountView[] memory acv, DisputeView[] memory ds, uint64 ep, uint64 repEp, uint64 events)
    {
        t = totals;
        idv = new IdentityView[](identityList.length);
        for (uint256 k = 0; k < identityList.length; k++) idv[k] = identityView(identityList[k]);
        acv = new AccountView[](accountList.length);
        for (uint256 k = 0; k < accountList.length; k++) acv[k] = accountView(accountList[k]);
        ds = new DisputeView[](openDisputes.length);
        for (uint256 k = 0; k < openDisputes.length; k++) {
            Dispute storage d = disputes[openDisputes[k]];
            ds[k] = DisputeView(openDisputes[k], d.accuser, d.accused, d.bond, d.closesAt, d.guilty, d.innocent);
        }
        ep = epoch;
        repEp = reputationEpoch;
        events = eventCount;
    }

    // ---------------------------------------------------------------- identities, tokens

    function register(uint8 role) external counted {
        if (role > 1) revert Malformed("role");
        Identity storage i = ids[msg.sender];
        if (i.registered) revert AlreadyRegistered();
        i.registered = true;
        i.role = role;
        i.registeredAt = uint64(block.timestamp);
        i.reputationEpoch = reputationEpoch;
        identityList.push(msg.sender);
        emit Registered(msg.sender, role);
    }

    /// @notice operator: lets a registered gateway settle epochs and publish reputation
    function authorize(address gateway) external onlyOperator counted {
        _known(gateway);
        authorized[gateway] = true;
        emit Authorized(gateway);
    }

    /// @notice operator: creates tokens (this contract must be the token's minter) into `to`'s
    /// wallet, or straight into client account `to`'s balance with toAccount
    function mint(address to, uint256 amount, bool toAccount) external onlyOperator counted {
        if (amount == 0 || to == address(0)) revert Malformed("amount");
        token.mint(address(this), amount);
        totals.minted += amount;
        if (toAccount) _creditAccount(to, amount, address(0));
        else {
            walletOf[to] += amount;
            totals.wallets += amount;
        }
        emit Minted(to, amount, toAccount);
    }

    /// @notice brings tokens in: pulls `amount` from the caller (who approved this contract) into `to`'s wallet
    function fund(address to, uint256 amount) external counted {
        if (amount == 0 || to == address(0)) revert Malformed("amount");
        if (!token.transferFrom(msg.sender, address(this), amount)) revert TransferFailed();
        totals.minted += amount;
        walletOf[to] += amount;
        totals.wallets += amount;
        emit Minted(to, amount, false);
    }

    /// @notice takes tokens out of the caller's wallet
    function withdrawWallet(uint256 amount) external counted {
        uint256 w = walletOf[msg.sender];
        if (amount == 0) revert Malformed("amount");
        if (w < amount) revert Overdrawn(msg.sender, w, amount);
        walletOf[msg.sender] = w - amount;
        totals.wallets -= amount;
        totals.withdrawnOut += amount;
        if (!token.transfer(msg.sender, amount)) revert TransferFailed();
    }

    // ---------------------------------------------------------------- stake

    /// @notice wallet → stake; the resulting stake must be ≥ minStake
    function stake(uint256 amount) external counted {
        Identity storage i = _known(msg.sender);
        if (amount == 0) revert Malformed("amount");
        if (i.slashes.length > 0) revert IdentitySlashed(msg.sender);
        uint256 w = walletOf[msg.sender];
        if (w < amount) revert Overdrawn(msg.sender, w, amount);
        uint256 s = i.stake + amount;
        if (s < params.minStake) revert BelowMinStake(s, params.minStake);
        walletOf[msg.sender] = w - amount;
        totals.wallets -= amount;
        i.stake = s;
        totals.stake += amount;
        emit Staked(msg.sender, amount);
    }

    /// @notice stake → a new unbonding entry releasing at now + unbondingSec (still slashable)
    function requestUnstake(uint256 amount) external counted {
        Identity storage i = _known(msg.sender);
        if (amount == 0) revert Malformed("amount");
        if (i.stake < amount) revert Overdrawn(msg.sender, i.stake, amount);
        i.stake -= amount;
        totals.stake -= amount;
        totals.unbonding += amount;
        uint64 releaseAt = uint64(block.timestamp) + params.unbondingSec;
        i.unbonding.push(Unbonding(amount, releaseAt));
        emit UnstakeRequested(msg.sender, amount, releaseAt);
    }

    /// @notice matured unbonding → wallet, oldest release first; amount 0 = all matured
    function withdraw(uint256 amount) external counted {
        Identity storage i = _known(msg.sender);
        uint256 h = i.unbondingHead;
        uint256 n = i.unbonding.length;
        if (h == n) revert NothingToWithdraw();
        uint256 ready;
        uint256 pending;
        for (uint256 k = h; k < n; k++) {
            if (i.unbonding[k].releaseAt <= block.timestamp) ready += i.unbonding[k].amount;
            else pending += i.unbonding[k].amount;
        }
        if (ready == 0) revert UnbondingNotOver(i.unbonding[h].releaseAt);
        if (amount == 0) amount = ready;
        if (amount > ready) {
            if (pending > 0) revert UnbondingNotOver(i.unbonding[h].releaseAt);
            revert Overdrawn(msg.sender, ready, amount);
        }
        uint256 left = amount;
        while (left > 0) {
            Unbonding storage e = i.unbonding[h];
            if (e.amount <= left) {
                left -= e.amount;
                delete i.unbonding[h];
                h++;
            } else {
                e.amount -= left;
                left = 0;
            }
        }
        i.unbondingHead = h;
        totals.unbonding -= amount;
        walletOf[msg.sender] += amount;
        totals.wallets += amount;
        emit Withdrawn(msg.sender, amount);
    }

    // ---------------------------------------------------------------- client accounts

    /// @notice the caller's wallet → client account `account`'s balance
    function deposit(address account, uint256 amount) external counted {
        if (amount == 0 || account == address(0)) revert Malformed("amount");
        uint256 w = walletOf[msg.sender];
        if (w < amount) revert Overdrawn(msg.sender, w, amount);
        walletOf[msg.sender] = w - amount;
        totals.wallets -= amount;
        _creditAccount(account, amount, msg.sender);
    }

    function _creditAccount(address account, uint256 amount, address from) internal {
        if (!knownAccount[account]) {
            knownAccount[account] = true;
            accountList.push(account);
        }
        Account storage a = accts[account];
        a.balance += amount;
        a.deposited += amount;
        totals.accounts += amount;
        emit Deposited(account, from, amount);
    }

    // ---------------------------------------------------------------- evidence

    /// @notice Two receipts by one signer for one slot (signer, request, session, step,
    /// layerStart, layerEnd) with different outputs. Self-proving. Spent once per slot.
    function slashEquivocation(bytes32[19] calldata a, bytes calldata sigA, bytes32[19] calldata b, bytes calldata sigB)
        external
        counted
        returns (uint256)
    {
        _known(msg.sender);
        address signer = _receiptSigner(RECEIPT_TYPEHASH, a, sigA, 0);
        _receiptSigner(RECEIPT_TYPEHASH, b, sigB, 1);
        if (
            a[R_SIGNER] != b[R_SIGNER] || a[R_REQUEST] != b[R_REQUEST] || a[R_SESSION] != b[R_SESSION] || a[R_STEP] != b[R_STEP]
                || a[R_LSTART] != b[R_LSTART] || a[R_LEND] != b[R_LEND]
        ) revert Unprovable("equivocation: the two receipts are not for one slot of one signer");
        if (a[R_OUTPUT] == b[R_OUTPUT]) revert Unprovable("equivocation: the two receipts sign the same output");
        _known(signer);
        // keccak256("equivocation|" + slotKey), slotKey as in accountability/checks/equivocation.ts
        bytes32 id = keccak256(
            abi.encodePacked(
                "equivocation|", _hex(uint256(uint160(signer)), 20), "|", _hex(uint256(a[R_REQUEST]), 32), "|", _hex(uint256(a[R_SESSION]), 32), "|",
                _dec(uint256(a[R_STEP])), "|", _dec(uint256(a[R_LSTART])), "|", _dec(uint256(a[R_LEND]))
            )
        );
        return _slash(signer, id, KIND_EQUIVOCATION, params.equivocationSlashPpm, msg.sender);
    }

    /// @notice Forged custody, provable from two signed receipts: `down` names `up` as its
    /// upstream receipt (upstreamReceiptHash = up's digest), same request, session and step,
    /// down.layerStart = up.layerEnd, yet it signs an input other than the output `up` signs.
    /// An honest hop checks exactly this before signing. Spent once per downstream receipt.
    function slashCustody(bytes32[19] calldata up, bytes calldata sigUp, bytes32[19] calldata down, bytes calldata sigDown)
        external
        counted
        returns (uint256)
    {
        _known(msg.sender);
        _receiptSigner(RECEIPT_TYPEHASH, up, sigUp, 0);
        address accused = _receiptSigner(RECEIPT_TYPEHASH, down, sigDown, 1);
        bytes32 dd = _digest(RECEIPT_TYPEHASH, down);
        if (
            down[R_UPSTREAM] != _digest(RECEIPT_TYPEHASH, up) || up[R_REQUEST] != down[R_REQUEST] || up[R_SESSION] != down[R_SESSION]
                || up[R_STEP] != down[R_STEP] || up[R_LEND] != down[R_LSTART] || up[R_OUTPUT] == down[R_INPUT]
        ) revert Unprovable("custody: no receipt contradicts the upstream receipt it names");
        _known(accused);
        bytes32 id = keccak256(abi.encodePacked("custody|", _hex(uint256(dd), 32)));
        return _slash(accused, id, KIND_CUSTODY, params.custodySlashPpm, msg.sender);
    }

    /// @notice Accuses the signer of `receipt` of a computation fault, with the verdicts at hand.
    /// A guilty quorum slashes at once; otherwise the accuser's bond is at stake: an innocent
    /// quorum hands it to the accused at once, no quorum locks it in a dispute that collects
    /// verdicts for disputeWindowSec (then the bond goes to the accused).
    /// @return id the evidence (and dispute) id; outcome 0 dispute open, 1 slashed, 2 frivolous
    function accuse(bool reexecution, bytes32[19] calldata receipt, bytes calldata sig, bytes32[7][] calldata verdicts, bytes[] calldata verdictSigs)
        external
        counted
        returns (bytes32 id, uint8 outcome)
    {
        Identity storage accuser = _known(msg.sender);
        bytes32 th = reexecution ? REEXECUTION_TYPEHASH : RECEIPT_TYPEHASH;
        address accused = _receiptSigner(th, receipt, sig, 0);
        _known(accused);
        bytes32 rh = _digest(th, receipt);
        id = keccak256(abi.encodePacked("computation|", _hex(uint256(rh), 32)));
        if (evidenceUsed[id] || disputes[id].open) revert EvidenceReplayed(id);
        (uint32 guilty, uint32 innocent) = _tally(id, rh, accused, verdicts, verdictSigs);
        uint256 q = params.verdictQuorum;
        if (guilty >= q) {
            _slash(accused, id, KIND_COMPUTATION, params.computationSlashPpm, msg.sender);
            return (id, 1);
        }
        uint256 bond = params.accuserBond;
        uint256 w = walletOf[msg.sender];
        if (w < bond) revert Overdrawn(msg.sender, w, bond);
        walletOf[msg.sender] = w - bond;
        if (innocent >= q) {
            walletOf[accused] += bond; // frivolous: the bond goes to the accused
            evidenceUsed[id] = true;
            emit DisputeClosed(id, 2);
            return (id, 2);
        }
        totals.wallets -= bond;
        accuser.bonded += bond;
        totals.bonds += bond;
        uint64 closesAt = uint64(block.timestamp) + params.disputeWindowSec;
        disputes[id] = Dispute(msg.sender, accused, rh, bond, closesAt, guilty, innocent, true);
        openDisputes.push(id);
        emit DisputeOpened(id, msg.sender, accused, bond, closesAt);
        return (id, 0);
    }

    /// @notice more verdicts for an open dispute; decides it once a quorum either way is reached
    function addVerdicts(bytes32 id, bytes32[7][] calldata verdicts, bytes[] calldata verdictSigs) external counted returns (uint8) {
        _known(msg.sender);
        Dispute storage d = disputes[id];
        if (!d.open) {
            if (evidenceUsed[id]) revert DisputeIsClosed(id);
            revert UnknownDispute(id);
        }
        if (block.timestamp >= d.closesAt) revert DisputeIsClosed(id);
        (uint32 guilty, uint32 innocent) = _tally(id, d.receiptHash, d.accused, verdicts, verdictSigs);
        d.guilty += guilty;
        d.innocent += innocent;
        uint256 q = params.verdictQuorum;
        if (d.guilty >= q) {
            _closeDispute(id, d);
            _walletCredit(d.accuser, d.bond); // the accusation stood: bond back
            _slash(d.accused, id, KIND_COMPUTATION, params.computationSlashPpm, d.accuser);
            emit DisputeClosed(id, 1);
            return 1;
        }
        if (d.innocent >= q) {
            _closeDispute(id, d);
            evidenceUsed[id] = true;
            _walletCredit(d.accused, d.bond); // frivolous: the bond goes to the accused
            emit DisputeClosed(id, 2);
            return 2;
        }
        return 0;
    }

    /// @dev verdicts over receipt digest `rh`: each must be validly signed by its auditor
    /// (BadSignature), about this receipt and by a distinct auditor within the call (Malformed),
    /// by a registered identity (UnknownIdentity). It counts only when its auditor is eligible
    /// (staked, never slashed), not the accused and not already counted for this dispute.
    function _tally(bytes32 id, bytes32 rh, address accused, bytes32[7][] calldata verdicts, bytes[] calldata sigs)
        internal
        returns (uint32 guilty, uint32 innocent)
    {
        if (verdicts.length != sigs.length || verdicts.length > 64) revert Malformed("verdicts: at most 64, one signature each");
        address[] memory mine = new address[](verdicts.length);
        for (uint256 k = 0; k < verdicts.length; k++) {
            address auditor = _verdictAuditor(verdicts[k], sigs[k], rh, k);
            for (uint256 j = 0; j < k; j++) if (mine[j] == auditor) revert Malformed("verdict: one auditor twice");
            mine[k] = auditor;
            if (!ids[auditor].registered) revert UnknownIdentity(auditor);
            if (voted[id][auditor] || auditor == accused || !isEligible(auditor)) continue;
            voted[id][auditor] = true;
            if (verdicts[k][V_PASS] == bytes32(0)) guilty++;
            else innocent++;
        }
    }

    /// @dev the auditor of a verdict over `rh` whose signature recovers to it
    function _verdictAuditor(bytes32[7] calldata v, bytes calldata sig, bytes32 rh, uint256 k) internal view returns (address auditor) {
        auditor = address(uint160(uint256(v[V_AUDITOR])));
        address rec = _recover(_digest7(v), sig);
        if (rec == address(0) || rec != auditor) revert BadSignature(k + 2, rec, auditor);
        if (v[V_RECEIPT] != rh) revert Malformed("verdict: judges another receipt");
    }

    function _closeDispute(bytes32 id, Dispute storage d) internal {
        d.open = false;
        ids[d.accuser].bonded -= d.bond;
        totals.bonds -= d.bond;
        uint256 n = openDisputes.length;
        for (uint256 k = 0; k < n; k++)
            if (openDisputes[k] == id) {
                openDisputes[k] = openDisputes[n - 1];
                openDisputes.pop();
                break;
            }
    }

    function _walletCredit(address to, uint256 amount) internal {
        walletOf[to] += amount;
        totals.wallets += amount;
    }

    /// @dev takes floor(atRisk · ppm / 1e6) from stake first, then from unbonding entries,
    /// latest release first; the reporter's share to its wallet, the rest burned. Spends `id`.
    function _slash(address who, bytes32 id, uint8 kind, uint32 ppm, address reporter) internal returns (uint256 amount) {
        if (evidenceUsed[id]) revert EvidenceReplayed(id);
        evidenceUsed[id] = true;
        Identity storage i = _known(who);
        uint256 h = i.unbondingHead;
        uint256 unb;
        for (uint256 k = h; k < i.unbonding.length; k++) unb += i.unbonding[k].amount;
        amount = ((i.stake + unb) * ppm) / PPM;
        uint256 fromStake = amount < i.stake ? amount : i.stake;
        i.stake -= fromStake;
        totals.stake -= fromStake;
        uint256 left = amount - fromStake;
        totals.unbonding -= left;
        while (left > 0) {
            Unbonding storage e = i.unbonding[i.unbonding.length - 1];
            if (e.amount <= left) {
                left -= e.amount;
                i.unbonding.pop();
            } else {
                e.amount -= left;
                left = 0;
            }
        }
        i.slashed += amount;
        i.slashes.push(SlashRecord(kind, uint64(block.timestamp), amount, id));
        totals.slashed += amount;
        uint256 reward = (amount * params.reporterSharePpm) / PPM;
        _walletCredit(reporter, reward);
        totals.burned += amount - reward;
        emit Slashed(who, id, kind, amount, reporter, reward);
    }

    // ---------------------------------------------------------------- settlement and reputation

    struct Charge {
        address account;
        uint256 amount;
    }

    struct Credit {
        address identity;
        uint256 units;
        uint64 layerSteps;
    }

    /// @notice The operator or an authorised gateway settles epoch `e` (after the last it settled)
    /// in one batch: every account charged, (charged − fee) split pro rata over credit units,
    /// slashed identities' shares and rounding dust to fees; disputes past their window close
    /// (bond to the accused). Duplicate accounts or identities in a batch are refused by the
    /// client (EvmLedger) like the SQLite ledger does.
    function settleEpoch(uint64 e, Charge[] calldata charges, Credit[] calldata credits)
        external
        counted
        returns (uint256 charged, uint256 rewards, uint256 fees)
    {
        bool isOperator = msg.sender == operator;
        if (!isOperator && !authorized[msg.sender]) revert NotAuthorized();
        uint64 last = isOperator ? epoch : settledEpochOf[msg.sender];
        if (e <= last) revert EpochOrder(last + 1, e);
        for (uint256 k = 0; k < charges.length; k++) {
            Account storage a = accts[charges[k].account];
            uint256 amt = charges[k].amount;
            if (!knownAccount[charges[k].account] || a.balance < amt) revert Overdrawn(charges[k].account, a.balance, amt);
            a.balance -= amt;
            a.charged += amt;
            charged += amt;
        }
        fees = (charged * params.feePpm) / PPM;
        uint256 pool = charged - fees;
        uint256 total;
        for (uint256 k = 0; k < credits.length; k++) {
            _known(credits[k].identity);
            total += credits[k].units;
        }
        for (uint256 k = 0; k < credits.length; k++) {
            Identity storage i = ids[credits[k].identity];
            bool forfeited = i.slashes.length > 0;
            uint256 paid = (total == 0 || forfeited) ? 0 : (pool * credits[k].units) / total;
            if (!forfeited) i.layerSteps += credits[k].layerSteps;
            if (paid > 0) {
                i.earned += paid;
                _walletCredit(credits[k].identity, paid);
                rewards += paid;
            }
            emit Paid(credits[k].identity, paid);
        }
        fees += pool - rewards;
        totals.accounts -= charged;
        totals.charged += charged;
        totals.rewards += rewards;
        totals.fees += fees;
        if (!isOperator) settledEpochOf[msg.sender] = e;
        if (e > epoch) epoch = e;
        _expireDisputes();
        emit EpochSettled(e, charged, rewards, fees);
    }

    function _expireDisputes() internal {
        uint256 k = 0;
        while (k < openDisputes.length) {
            bytes32 id = openDisputes[k];
            Dispute storage d = disputes[id];
            if (d.closesAt > block.timestamp) {
                k++;
                continue;
            }
            _closeDispute(id, d); // swaps the last one into k
            evidenceUsed[id] = true;
            _walletCredit(d.accused, d.bond);
            emit DisputeClosed(id, 3);
        }
    }

    /// @notice The operator or an authorised gateway publishes reputation for epoch `e` (after the
    /// last one): the reported identities' new values in ppm, computed by rules.ts from the
    /// reports (reportsHash commits to them); the others decay lazily (readers apply
    /// rules.decayReputation once per epoch since an identity's reputationEpoch).
    function publishReputation(uint64 e, address[] calldata who, uint32[] calldata ppm, bytes32 reportsHash) external counted {
        if (msg.sender != operator && !authorized[msg.sender]) revert NotAuthorized();
        if (e <= reputationEpoch) revert EpochOrder(reputationEpoch + 1, e);
        if (who.length != ppm.length) revert Malformed("reputation: lengths differ");
        for (uint256 k = 0; k < who.length; k++) {
            if (ppm[k] > PPM) revert Malformed("reputation above 1");
            Identity storage i = _known(who[k]);
            i.reputationPpm = ppm[k];
            i.reputationEpoch = e;
        }
        reputationEpoch = e;
        emit ReputationPublished(e, who.length, reportsHash);
    }

    // ---------------------------------------------------------------- text, as the SQLite ledger hashes it

    /// @dev "0x" + lower-case hex of the low `n` bytes of x
    function _hex(uint256 x, uint256 n) internal pure returns (bytes memory out) {
        out = new bytes(2 + 2 * n);
        out[0] = "0";
        out[1] = "x";
        bytes16 digits = "0123456789abcdef";
        for (uint256 k = 0; k < n; k++) {
            uint8 b = uint8(x >> (8 * (n - 1 - k)));
            out[2 + 2 * k] = digits[b >> 4];
            out[3 + 2 * k] = digits[b & 15];
        }
    }

    /// @dev decimal text of x
    function _dec(uint256 x) internal pure returns (bytes memory out) {
        if (x == 0) return "0";
        uint256 len;
        for (uint256 y = x; y > 0; y /= 10) len++;
        out = new bytes(len);
        for (; x > 0; x /= 10) out[--len] = bytes1(uint8(48 + (x % 10)));
    }

    // ---------------------------------------------------------------- internals

    function _known(address who) internal view returns (Identity storage i) {
        i = ids[who];
        if (!i.registered) revert UnknownIdentity(who);
    }

    function _digest(bytes32 typeHash, bytes32[19] calldata w) internal view returns (bytes32) {
        return keccak256(abi.encodePacked(hex"1901", DOMAIN_SEPARATOR, keccak256(abi.encodePacked(typeHash, w))));
    }

    function _digest7(bytes32[7] calldata w) internal view returns (bytes32) {
        return keccak256(abi.encodePacked(hex"1901", DOMAIN_SEPARATOR, keccak256(abi.encodePacked(VERDICT_TYPEHASH, w))));
    }

    /// @dev the receipt's signer, after checking `sig` recovers to its signer field
    function _receiptSigner(bytes32 th, bytes32[19] calldata w, bytes calldata sig, uint256 which) internal view returns (address) {
        address claimed = address(uint160(uint256(w[R_SIGNER])));
        address rec = _recover(_digest(th, w), sig);
        if (rec == address(0) || rec != claimed) revert BadSignature(which, rec, claimed);
        return rec;
    }

    /// @dev ecrecover of r ‖ s ‖ v; address(0) for a malformed, high-s or unrecoverable signature
    function _recover(bytes32 digest, bytes calldata sig) internal pure returns (address) {
        if (sig.length != 65) return address(0);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (uint256(s) > HALF_N || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }
}
